"""A database that goes away mid-request: 503 with Retry-After (a client re-sends), and the
failure never reaches the server's log with its SQL parameters (UPNs, marks)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.observability import error_fields
from shared.problems import install_problem_handlers

UPN = "P343231622000"


def app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/gone")
    async def gone() -> None:
        raise DBAPIError(
            "INSERT INTO marks ...", [(UPN, "2024-10-14")], ConnectionRefusedError(111, "refused")
        )

    @app.get("/constraint")
    async def constraint() -> None:
        raise IntegrityError("INSERT INTO marks ...", [(UPN,)], ValueError("duplicate key"))

    return app


async def test_database_gone_is_503_and_not_reraised(capsys: pytest.CaptureFixture[str]) -> None:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/gone")  # raise_app_exceptions: a re-raise would fail here
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["type"] == "urn:rollcall:problem:unavailable"
        r = await client.get("/constraint")
        assert r.status_code == 500
    out = capsys.readouterr()
    assert UPN not in out.out + out.err


class _DriverError(Exception):
    sqlstate = "53300"


def test_error_fields_name_the_driver_error_and_sqlstate_but_never_the_message() -> None:
    cause = ConnectionResetError("connection to 10.0.0.7 for " + UPN)
    orig = _DriverError("too many clients for " + UPN)
    orig.__cause__ = cause
    fields = error_fields(DBAPIError("SELECT * FROM pupils WHERE upn = $1", [UPN], orig))
    assert fields == {"error_type": "DBAPIError", "cause": "ConnectionResetError", "sqlstate": "53300"}
    assert error_fields(ValueError(UPN)) == {"error_type": "ValueError"}
