"""Shared fixtures: real databases with migrations applied, an in-process app, tokens per role."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.persistence.schema import metadata
from fleet.settings import Settings

# Property tests and fuzzers are seeded in CI (derandomize): every run tries the same examples, so a failure
# reproduces on any machine and a run costs the same each time; each test's own max_examples bounds it.
# HYPOTHESIS_PROFILE=explore draws fresh examples each run; benchmarks/soak_fuzz.py soaks the fuzz targets.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
hypothesis_settings.register_profile("explore", database=None, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

POSTGRES_URL = os.environ.get("LABFLEET_TEST_POSTGRES_URL")
REQUIRE_EXTERNAL = os.environ.get("LABFLEET_TEST_REQUIRE_EXTERNAL") == "1"


class PendingTaskReports(logging.Handler):
    """asyncio's "Task was destroyed but it is pending!" reports, which it only logs (from a finalizer).

    A task nobody cancelled and awaited is destroyed with its loop: its cleanup never ran. Each test fails on
    a report made while it ran, and the session fails on one made after the last test (see below).
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Task was destroyed but it is pending" in message:
            self.seen.append(message[:400])

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


PENDING_TASKS = PendingTaskReports()
logging.getLogger("asyncio").addHandler(PENDING_TASKS)
# pytest-asyncio ends each test's loop with asyncio.Runner.close(), which cancels whatever tasks are still
# running before the loop closes: a task its owner never cancelled and awaited is then not destroyed pending,
# it is hidden. The tasks still running at that moment are reported the same way. (asyncio's private
# `_cancel_all_tasks` is the one place Runner.close() does that, in Python 3.11 to 3.13.)
_runner_cancel_all = asyncio.runners._cancel_all_tasks  # type: ignore[attr-defined]


def _report_then_cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    PENDING_TASKS.seen.extend(f"task still running when its loop closed: {t!r}"[:400] for t in left)
    _runner_cancel_all(loop)


asyncio.runners._cancel_all_tasks = _report_then_cancel_all  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def no_task_left_pending() -> Iterator[None]:
    yield
    seen = PENDING_TASKS.take()
    if seen:
        pytest.fail(
            "asyncio task(s) destroyed while pending (never cancelled and awaited):\n" + "\n".join(seen)
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gc.collect()  # tasks in reference cycles are destroyed only now
    seen = PENDING_TASKS.take()
    if seen:
        print("\nasyncio task(s) destroyed while pending after the last test:\n" + "\n".join(seen))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def need_external(what: str) -> None:
    """Skip when a system service is missing; fail instead when CI says they must be there."""
    if REQUIRE_EXTERNAL:
        pytest.fail(f"{what} is required (LABFLEET_TEST_REQUIRE_EXTERNAL=1) but not available")
    pytest.skip(f"{what} not available")


def off_loop(fn: Any) -> Any:
    """Run blocking setup that starts its own event loop (alembic) in a worker thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests copy it."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    off_loop(lambda: upgrade_sync(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "labfleet.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    if not POSTGRES_URL:
        need_external("PostgreSQL (LABFLEET_TEST_POSTGRES_URL)")

    async def reset() -> None:
        engine = create_engine(POSTGRES_URL)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await engine.dispose()

    def work() -> None:
        asyncio.run(reset())
        upgrade_sync(POSTGRES_URL)

    off_loop(work)
    return POSTGRES_URL


async def truncate_all(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
async def postgres_url(postgres_migrated: str) -> str:
    await truncate_all(postgres_migrated)
    return postgres_migrated


@pytest.fixture(params=["sqlite", "postgres"])
async def any_db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    url = request.getfixturevalue("postgres_migrated")
    await truncate_all(url)
    return url


@pytest.fixture
def clock() -> FakeClock:
    # Monday 2026-09-07, 07:55 UTC: just before the first bell of term.
    return FakeClock(datetime(2026, 9, 7, 7, 55, tzinfo=UTC))


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(sqlite_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


# Tests never write firmware artifacts into the working tree's var/: one temporary store per test run.
TEST_ARTIFACT_DIR = Path(__import__("tempfile").mkdtemp(prefix="labfleet-test-artifacts-"))


def make_settings(url: str, **overrides: Any) -> Settings:
    overrides.setdefault("rollouts", {"artifact_dir": str(TEST_ARTIFACT_DIR)})
    return Settings(database_url=url, **overrides)


@dataclass
class Api:
    """An in-process client with one token per (role, scope) on demand."""

    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    clock: FakeClock
    tokens: dict[tuple[Role, tuple[int, ...]], str] = field(default_factory=dict)

    async def token(self, role: Role | str, schools: tuple[int, ...] | None = None) -> str:
        """A token for `role` scoped to `schools`, or district-wide when schools is None."""
        from fleet.services.tokens import create_token

        role = Role(role)
        key = (role, schools or ())
        if key not in self.tokens:
            async with unit_of_work(self.sessions) as session:
                _, plain = await create_token(
                    session,
                    principal=SYSTEM,
                    at=self.clock.now(),
                    name=f"{role}-{key[1]}",
                    role=role,
                    school_ids=list(schools or []),
                    district_wide=schools is None,
                )
            self.tokens[key] = plain
        return self.tokens[key]

    async def as_(self, role: Role | str, schools: tuple[int, ...] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(role, schools)}"}

    async def admin(self) -> dict[str, str]:
        return await self.as_(Role.ADMIN)


@pytest.fixture
async def api(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Api]:
    app = create_app(make_settings(sqlite_url), clock=clock, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client=client, sessions=app.state.fleet.sessions, clock=clock)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tmp_cwd(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.fixture
async def api_any(any_db_url: str, clock: FakeClock) -> AsyncIterator[Api]:
    """The in-process API on SQLite and on PostgreSQL."""
    app = create_app(make_settings(any_db_url), clock=clock, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client=client, sessions=app.state.fleet.sessions, clock=clock)
