"""Revoked devices still trying to connect are counted on a managed mosquitto too (issue 16, point 7).

mosquitto refuses them itself and logs no identity, so its connect-recorder plugin (built here with gcc
against mosquitto-dev) tells the service each CONNECT's username and defers the decision; these tests run the
real broker with the real plugin and read the count in the inspection report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import select

from fleet.domain.permissions import SYSTEM
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.runtime import connect_log
from fleet.runtime.brokers import MosquittoBroker, free_port
from fleet.runtime.plane import DevicePlane
from fleet.services import enrollment, reports
from fleet.services.reports.data import ReportQuery
from fleet.settings import ReportSettings
from tests.mqtt.mqtt_plane import Plane, need_mosquitto, require_external, terminal, wait_until

REVOKED, KEPT = "TAB-00000", "TAB-00001"
ATTEMPTS = 5


def need_build_tools() -> None:
    missing = [what for what, ok in (("gcc", shutil.which("gcc")), ("mosquitto-dev", _headers())) if not ok]
    if missing:
        if require_external():
            pytest.fail(f"{', '.join(missing)} required (LABFLEET_TEST_REQUIRE_EXTERNAL=1) but not installed")
        pytest.skip(f"{', '.join(missing)} not installed")


def _headers() -> bool:
    try:
        connect_log._headers_dir()
    except connect_log.RecorderUnavailable:
        return False
    return True


async def _refused(plane: Plane, identity: str) -> int:
    async with plane.sessions() as s:
        cred = (
            await s.execute(select(DeviceCredential).where(DeviceCredential.username == identity))
        ).scalar_one()
        return cred.refused_connects


async def _knocking(plane: Plane) -> dict[str, int]:
    async with plane.sessions() as s:
        report = await reports.generate(
            s, SYSTEM, "inspection", ReportQuery(), settings=ReportSettings(), now=plane.clock.now()
        )
    section = report.section("revoked_connecting")
    ident, refused = section.index("identity"), section.index("refused")
    return {row[ident]: row[refused] for row in section.rows}


async def test_a_revoked_device_trying_n_times_is_counted_n_times_on_managed_mosquitto(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    need_mosquitto()
    need_build_tools()
    caplog.set_level(logging.INFO)
    port = free_port()
    settings = plane.settings(
        broker="mosquitto",
        listen_port=port,
        data_dir=str(plane.tmp / "mq"),
        mosquitto_plugin_cache=str(plane.tmp / "plugin-cache"),
    )
    (revoked_id, _kept_id) = await plane.add_devices(2)
    pw = await plane.enroll([REVOKED, KEPT])
    school = plane.school_code
    async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
        broker = rt.broker
        assert isinstance(broker, MosquittoBroker) and broker.recorder is not None
        assert "labfleet_connects.so" in broker.conf_path.read_text()
        datagrams: list[bytes] = []
        received = broker.recorder.log.datagram_received

        def spy(data: bytes, addr: object) -> None:
            datagrams.append(data)
            received(data, addr)

        broker.recorder.log.datagram_received = spy  # type: ignore[method-assign]
        async with terminal(port, school, REVOKED, pw[REVOKED], will=False):
            pass  # before its revocation: accepted, and its persistent session stays on the broker
        async with plane.sessions() as s:
            await enrollment.revoke(s, revoked_id, now=plane.clock.now())
            await s.commit()
        await rt.credentials_changed(REVOKED, revoked=True)
        for _ in range(ATTEMPTS - 1):
            with pytest.raises(aiomqtt.MqttError):
                async with terminal(port, school, REVOKED, pw[REVOKED], will=False, timeout=3):
                    pass
        with pytest.raises(aiomqtt.MqttError):  # a wrong password of a live device is not a revoked one
            async with terminal(port, school, KEPT, "wrong-password", will=False, timeout=3):
                pass
        async with terminal(port, school, KEPT, pw[KEPT], will=False):
            pass  # the plugin changes no outcome: the valid device still logs in
        # Another enrollment reloads mosquitto, which re-checks every session, the revoked device's offline
        # one too: that is not an attempt. Then one more real attempt.
        reloads = broker.reloads
        await plane.add_devices(1, prefix="NEW")
        await plane.enroll(["NEW-00000"])
        await rt.credentials_changed("NEW-00000")
        assert broker.reloads == reloads + 1
        with pytest.raises(aiomqtt.MqttError):
            async with terminal(port, school, REVOKED, pw[REVOKED], will=False, timeout=3):
                pass

        async def all_seen() -> bool:
            return len(datagrams) >= ATTEMPTS + 1

        await wait_until(all_seen)
        await asyncio.sleep(0.5)  # what must not come (a reload's re-check) has time to arrive
        assert broker.authority.refused.pending == ATTEMPTS
        plane.clock.advance(60)
        assert await rt.flush_refused_connects() == 1
    assert await _refused(plane, REVOKED) == ATTEMPTS
    assert await _refused(plane, KEPT) == 0
    assert await _knocking(plane) == {REVOKED: ATTEMPTS}
    # The plugin never sends a password, and no identity reaches the service's or the broker's log.
    assert not any(pw[REVOKED].encode() in d or b"wrong-password" in d for d in datagrams)
    # The refused CONNECTs only: no accepted one, no reload's re-check.
    assert len(datagrams) == ATTEMPTS + 1, datagrams
    assert REVOKED not in caplog.text, [r.getMessage() for r in caplog.records if REVOKED in r.getMessage()]
    assert pw[REVOKED] not in (broker.dir / "mosquitto.log").read_text()


async def test_without_gcc_mosquitto_still_runs_and_the_service_says_attempts_are_not_counted(
    plane: Plane, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = need_mosquitto()
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no gcc
    port = free_port()
    settings = plane.settings(
        broker="mosquitto",
        listen_port=port,
        mosquitto_bin=binary,
        data_dir=str(plane.tmp / "mq"),
        mosquitto_plugin_cache=str(plane.tmp / "plugin-cache"),
    )
    (revoked_id, _kept_id) = await plane.add_devices(2)
    pw = await plane.enroll([REVOKED, KEPT])
    async with plane.sessions() as s:
        await enrollment.revoke(s, revoked_id, now=plane.clock.now())
        await s.commit()
    async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
        broker = rt.broker
        assert isinstance(broker, MosquittoBroker) and broker.recorder is None
        assert "labfleet_connects" not in broker.conf_path.read_text()
        with pytest.raises(aiomqtt.MqttError):
            async with terminal(port, plane.school_code, REVOKED, pw[REVOKED], will=False, timeout=3):
                pass
        async with terminal(port, plane.school_code, KEPT, pw[KEPT], will=False):
            pass
        assert broker.authority.refused.pending == 0
    assert "CONNECT attempts are not counted for the security inspection: gcc is not installed" in caplog.text
    assert not list((plane.tmp / "plugin-cache").glob("*.so"))


async def test_the_plugin_is_built_once_and_rebuilt_when_its_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_build_tools()
    cache = tmp_path / "cache"
    first = await connect_log.build(cache)
    stamp = first.stat().st_mtime_ns
    assert await connect_log.build(cache) == first and first.stat().st_mtime_ns == stamp  # cached
    changed = tmp_path / "labfleet_connects.c"
    changed.write_text(connect_log.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(connect_log, "SOURCE", changed)
    second = await connect_log.build(cache)
    assert second != first and second.is_file() and not first.exists()  # stale one removed
    assert os.access(second, os.R_OK)


async def test_a_failed_build_is_reported_with_the_compilers_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_build_tools()
    broken = tmp_path / "labfleet_connects.c"
    broken.write_text("this is not C;\n")
    monkeypatch.setattr(connect_log, "SOURCE", broken)
    with pytest.raises(connect_log.RecorderUnavailable, match="gcc failed: .*error"):
        await connect_log.build(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (
            b"lfc1\x00TAB-00000\x00TAB-00000\x00127.0.0.1",
            connect_log.Attempt("TAB-00000", "TAB-00000", "127.0.0.1"),
        ),
        (b"lfc1\x00TAB-00000\x00\x00", connect_log.Attempt("TAB-00000", "", "")),
        (b"lfc2\x00TAB-00000\x00TAB-00000\x00127.0.0.1", None),  # another format
        (b"lfc1\x00TAB-00000\x00127.0.0.1", None),  # a field missing
        (b"lfc1\x00a\x00b\x00c\x00d", None),  # one too many
        (b"lfc1\x00\x00TAB-00000\x00127.0.0.1", None),  # no username
        (b"lfc1\x00\xff\xfe\x00x\x00y", None),  # not UTF-8
    ],
)
def test_datagrams_other_than_the_plugins_are_ignored(
    datagram: bytes, expected: connect_log.Attempt | None
) -> None:
    assert connect_log.parse(datagram) == expected


async def test_the_socket_passes_usernames_on_and_ignores_anything_else() -> None:
    seen: list[str] = []
    log = connect_log.ConnectLog(seen.append)
    path = await log.open(None)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"lfc1\x00TAB-1\x00\x00::1", str(path))
            s.sendto(b"garbage", str(path))

        async def both() -> bool:
            return log.received + log.malformed == 2

        await wait_until(both)
        assert seen == ["TAB-1"] and log.malformed == 1
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    finally:
        log.close()
    assert not path.exists() and not path.parent.exists()
