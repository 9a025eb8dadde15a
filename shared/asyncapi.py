"""Write the AsyncAPI 3.0 document of Rollcall's Kafka events: ``python -m shared.asyncapi``.

Built from the payload models in ``shared.events`` (and those the other services register), so
the document cannot drift from the code; ``tests/unit/test_asyncapi.py`` checks the committed
``docs/asyncapi.json`` is current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.events import KEYS, PAYLOADS, CloudEvent

DOC = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"


def document(payloads: dict[Any, dict[str, type[BaseModel]]] | None = None) -> dict[str, Any]:
    payloads = payloads or PAYLOADS
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "CloudEvent": CloudEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    }
    operations: dict[str, Any] = {}
    for topic, types in payloads.items():
        name = str(topic.value if hasattr(topic, "value") else topic)
        channel_id = name.replace(".", "_")
        channel_messages: dict[str, Any] = {}
        for event_type, model in types.items():
            message_id = event_type.replace(".", "_").replace("<", "").replace(">", "")
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
            messages[message_id] = {
                "name": event_type,
                "contentType": "application/json",
                "headers": {
                    "type": "object",
                    "properties": {
                        "ce_id": {"type": "string"},
                        "ce_type": {"const": event_type},
                        "traceparent": {"type": "string"},
                    },
                },
                "payload": {
                    "allOf": [
                        {"$ref": "#/components/schemas/CloudEvent"},
                        {
                            "properties": {
                                "type": {"const": event_type},
                                "data": {"$ref": f"#/components/schemas/{model.__name__}"},
                            }
                        },
                    ]
                },
                "description": (model.__doc__ or "").strip(),
            }
            channel_messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
        channels[channel_id] = {
            "address": name,
            "messages": channel_messages,
            "description": f"Record key: {KEYS.get(topic, 'the pupil UPN')}.",
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Rollcall events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in structured JSON mode on Apache Kafka (CONTRACT.md).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True, default=str) + "\n"


def main() -> None:
    if "--check" in sys.argv:
        if not DOC.exists() or DOC.read_text() != render():
            raise SystemExit(f"{DOC} is out of date: run python -m shared.asyncapi")
        return
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(DOC)


if __name__ == "__main__":
    main()
