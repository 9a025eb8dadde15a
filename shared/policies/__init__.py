"""Bundled local-authority policy files (TOML), read by shared.policy.load_policy."""
