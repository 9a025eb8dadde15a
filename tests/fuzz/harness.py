"""Driving a service in-process for schemathesis: the app (migrated database, real Kafka) runs on
its own event loop in a thread, so hypothesis's synchronous tests can send it requests.

``fuzz_service`` generates cases for every operation of the service's own OpenAPI document
(positive and negative data), sends each with one of the given ``Authorization`` headers (or
none), sometimes with path parameters swapped for ids that exist, and runs schemathesis's checks
on every response: no 5xx, every status, content type, header and body as documented. It collects
every failure instead of stopping at the first, so one run reports them all.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.ingest_fixtures import service_client

T = TypeVar("T")
BASE_URL = "http://fuzz"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# The whole fuzz part stays within a few minutes on 2 cores; ROLLCALL_FUZZ_EXAMPLES=500 digs deeper.
EXAMPLES = int(os.environ.get("ROLLCALL_FUZZ_EXAMPLES", "50"))


class LiveService:
    """A service's app with its lifespan entered on a private event loop (see module docstring)."""

    def __init__(self, service: str, db_url: str, bootstrap: str, **settings: Any) -> None:
        self.service = service
        self._args = (service, db_url, bootstrap)
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fuzz-{service}", daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: Future[None] | None = None
        self.client: httpx.AsyncClient | None = None
        self.app: Any = None

    def __enter__(self) -> LiveService:
        self._thread.start()
        ready = threading.Event()
        self._done = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        while not ready.wait(0.1):
            if self._done.done():
                self._done.result()  # raises the start-up failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._done is not None:
            self._done.result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        service, db_url, bootstrap = self._args
        async with service_client(service, db_url, bootstrap, **self._settings) as ready_client:
            self.app = ready_client.app  # type: ignore[attr-defined]
            # A 500 comes back as a response (the check counts it), not as the app's exception.
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                self.client = client
                ready.set()
                await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def build(self, kwargs: Mapping[str, Any]) -> httpx.Request:
        """The request schemathesis serialised; raises if it cannot be sent over HTTP at all."""
        assert self.client is not None
        client = self.client
        body: dict[str, Any] = {}
        if "json" in kwargs:
            body["json"] = kwargs["json"]
        elif "data" in kwargs:
            data = kwargs["data"]
            body["content" if isinstance(data, bytes | str) else "data"] = data
        if kwargs.get("files"):
            body["files"] = kwargs["files"]
        return client.build_request(
            kwargs["method"],
            kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params"),
            cookies=kwargs.get("cookies"),
            **body,
        )

    def send(self, request: httpx.Request) -> httpx.Response:
        assert self.client is not None
        return self.run(self.client.send(request))


@dataclass
class Report:
    service: str
    requests: int = 0
    unsendable: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (operation, failure) -> example

    def line(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.service}: {self.requests} requests ({statuses}); {self.unsendable} unsendable; "
            f"{len(self.failures)} distinct failures"
        )


def fuzz_service(
    live: LiveService,
    auth_headers: Sequence[dict[str, str]],
    known_ids: Mapping[str, Sequence[str]],
    examples: int = EXAMPLES,
    excluded: Mapping[str, Sequence[Any]] | None = None,
) -> Report:
    """Run ``examples`` generated requests against each operation of the service; see the module doc."""
    assert live.app is not None
    schema = schemathesis.openapi.from_dict(live.app.openapi())
    report = Report(live.service)
    for result in schema.get_all_operations():
        operation = result.ok()
        checks = [c for c in CHECKS if c not in (excluded or {}).get(operation.label, ())]
        _fuzz_operation(live, operation, auth_headers, known_ids, examples, report, checks)
    return report


def _fuzz_operation(
    live: LiveService,
    operation: Any,
    auth_headers: Sequence[dict[str, str]],
    known_ids: Mapping[str, Sequence[str]],
    examples: int,
    report: Report,
    checks: list[Any],
) -> None:
    strategies = {
        mode: operation.as_strategy(generation_mode=mode)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    }

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        mode = data.draw(st.sampled_from(list(strategies)), label="mode")
        case = data.draw(strategies[mode], label="case")
        # Ids that exist reach deeper code; only in valid cases, whose other parts stay valid.
        for name in list(case.path_parameters or {}) if mode is GenerationMode.POSITIVE else ():
            ids = known_ids.get(name)
            if ids and data.draw(st.booleans(), label=f"known {name}"):
                case.path_parameters[name] = data.draw(st.sampled_from(list(ids)), label=name)
        auth = data.draw(st.sampled_from(list(auth_headers)), label="auth")
        try:
            kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=auth)
            request = live.build(kwargs)
        except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError, ValueError, TypeError):
            report.unsendable += 1  # not HTTP (a header httpx refuses to send, a bad URL)
            return
        response = live.send(request)
        report.requests += 1
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=dict(kwargs.get("headers") or {}))
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every failure is recorded
            for failure in _failures(exc):
                key = (operation.label, failure.splitlines()[0][:160])
                report.failures.setdefault(
                    key,
                    f"{failure[:600]}\n-> {response.status_code} {response.text[:300]}\n{_curl(kwargs)}",
                )

    run()


def _failures(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [text for inner in exc.exceptions for text in _failures(inner)]
    return [f"{type(exc).__name__}: {exc}"]


def _curl(kwargs: Mapping[str, Any]) -> str:
    body = kwargs.get("json", kwargs.get("data"))
    return f"{kwargs['method']} {kwargs['url']} params={kwargs.get('params')} body={str(body)[:300]}"
