"""Fixtures for the MQTT device plane: a migrated database per test, a seeded school, real brokers."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet.persistence.db import upgrade_sync
from tests.mqtt.mqtt_plane import Plane, seed


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plane-template") / "template.db"
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
async def plane(_template_db: Path, tmp_path: Path) -> AsyncIterator[Plane]:
    path = tmp_path / "plane.db"
    shutil.copy(_template_db, path)
    p = await seed(f"sqlite+aiosqlite:///{path}", tmp_path)
    yield p
    await p.engine.dispose()
