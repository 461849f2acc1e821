"""Browser fixtures: the real service under uvicorn on a free loopback port, and the system Chromium driven by
Playwright (never a downloaded browser). Every request the browser makes to anything but loopback is blocked
and recorded, and a test that caused one fails."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from fleet.app import RuntimeHook, create_app
from fleet.domain.clock import SystemClock
from fleet.runtime.brokers import free_port
from fleet.settings import Settings
from tests.conftest import Api, make_settings, need_external

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
T = TypeVar("T")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class LiveServer:
    """The app served by uvicorn in a thread with its own event loop; `run()` executes setup on that loop."""

    url: str
    app: Any
    loop: asyncio.AbstractEventLoop
    settings: Settings
    _api: Api | None = None

    def run(self, fn: Callable[[Api], Awaitable[T]], timeout: float = 60) -> T:
        async def call() -> T:
            if self._api is None:
                client = httpx.AsyncClient(base_url=self.url, timeout=30)
                self._api = Api(client=client, sessions=self.app.state.fleet.sessions, clock=SystemClock())  # type: ignore[arg-type]
            return await fn(self._api)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)


async def _collect() -> None:
    """Collect garbage on the server's loop while it runs: a database connection dropped by a finished request
    closes through a task on that loop, which must run before the loop is closed."""
    gc.collect()
    await asyncio.sleep(0.2)


def serve(settings: Settings, hooks: list[RuntimeHook] | None = None) -> Iterator[LiveServer]:
    import uvicorn

    app = create_app(settings, migrate=False, runtime_hooks=hooks or [])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    holder: dict[str, asyncio.AbstractEventLoop] = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())
        # Connections the pool let go of close through tasks on this loop: let them finish (after a collect,
        # so none is left to the garbage collector once the loop is gone), then close the loop.
        gc.collect()
        loop.run_until_complete(asyncio.sleep(0.2))
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="console-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    live = LiveServer(url=f"http://127.0.0.1:{port}", app=app, loop=holder["loop"], settings=settings)
    try:
        yield live
    finally:
        if live._api is not None:
            live.run(lambda api: api.client.aclose())
        live.run(lambda api: _collect())
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def live_server(sqlite_template: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """The service without a device plane (pages, forms, sign-in)."""
    db = tmp_path / "console.db"
    shutil.copy(sqlite_template, db)
    settings = make_settings(f"sqlite+aiosqlite:///{db}", mqtt={"broker": "none"})
    yield from serve(settings)


@pytest.fixture
def live_plane(sqlite_template: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """The service with its device plane on an embedded broker (terminals connect to `settings.mqtt`)."""
    from fleet.runtime.plane import device_plane_hook

    db = tmp_path / "console.db"
    shutil.copy(sqlite_template, db)
    settings = make_settings(
        f"sqlite+aiosqlite:///{db}",
        mqtt={"broker": "embedded", "listen_port": free_port(), "ingest_batch_ms": 20},
    )
    yield from serve(settings, [device_plane_hook])


# Module scope, not session: while Playwright's sync API is active the main thread has a running event loop,
# which async tests of later modules (pytest-asyncio, asyncio.run) would trip over.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        need_external("Chromium at /usr/bin/chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_external("playwright (the dev extra)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Tab:
    """A browser page plus what the test needs around it: screenshots per step and blocked requests."""

    page: Any
    name: str
    base: str = ""
    blocked: list[str] = field(default_factory=list)
    step: int = 0

    def go(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def shot(self, label: str, *, full_page: bool = True) -> Path:
        self.step += 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{self.name}-{self.step:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=full_page, timeout=60_000)
        return path


def _block_external(blocked: list[str]) -> Callable[[Any], None]:
    def handle(route: Any) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:", "about:")) or host in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    return handle


@pytest.fixture
def tab(browser: Any, request: pytest.FixtureRequest) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(30_000)  # generous: CI machines are shared and slow
    t = Tab(page=page, name=request.node.name.removeprefix("test_")[:60])
    context.route("**/*", _block_external(t.blocked))
    page.on("dialog", lambda d: d.accept())
    try:
        yield t
    finally:
        context.close()
    assert not t.blocked, f"the page tried to reach outside loopback: {t.blocked}"
