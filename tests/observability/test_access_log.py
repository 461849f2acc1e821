"""The access log never holds a credential from a query string (issue 16, point 5)."""

from __future__ import annotations

import asyncio
import logging
import socket

import httpx
import uvicorn
from fastapi import FastAPI

from fleet.observability.logredact import REDACTED, RedactSecrets, redact_query, uvicorn_log_config


def test_secret_query_values_are_redacted_and_the_rest_kept() -> None:
    assert redact_query("/a/b") == "/a/b"
    assert redact_query("/dl?sig=abc123&expires=99") == f"/dl?sig={REDACTED}&expires=99"
    assert (
        redact_query("/x?TOKEN=t&Sig=s&si%67=u&q=sig")
        == f"/x?TOKEN={REDACTED}&Sig={REDACTED}&si%67={REDACTED}&q=sig"
    )
    assert redact_query("/x?sig") == "/x?sig"  # no value, nothing to hide


async def test_uvicorns_access_log_shows_the_request_without_its_secrets() -> None:
    app = FastAPI()

    @app.get("/dl")
    async def dl() -> dict[str, str]:
        return {"ok": "yes"}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=uvicorn_log_config(), lifespan="off")
    access = logging.getLogger("uvicorn.access")
    assert any(isinstance(f, RedactSecrets) for f in access.filters)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    access.addHandler(keep)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient() as client:
            r = await client.get(
                f"http://127.0.0.1:{port}/dl", params={"sig": "s3cr3t-sig", "token": "t0k", "v": "2"}
            )
            assert r.status_code == 200
    finally:
        server.should_exit = True
        await task
        access.removeHandler(keep)
    line = next(m for m in seen if "/dl" in m)
    assert "s3cr3t-sig" not in line and "t0k" not in line
    assert f"sig={REDACTED}" in line and "v=2" in line and "200" in line
