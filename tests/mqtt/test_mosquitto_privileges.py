"""Least privilege and quiet logs for the brokers (issue 16, point 5): the managed mosquitto never runs as
root, and device identities do not appear in either broker's log at the default level."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import aiomqtt
import pytest

from fleet.domain import wire
from fleet.observability.logredact import HIDDEN_CLIENT, HideClientIds
from fleet.runtime.brokers import BrokerAuthority, EmbeddedBroker, MosquittoBroker, broker_account, free_port
from tests.mqtt.mqtt_plane import Plane, need_mosquitto, terminal

SVC_USER, SVC_PW = "labfleet-service", "svc-priv-secret"
T = wire.Topics("labfleet")


def _uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


async def test_managed_mosquitto_never_runs_as_root_and_keeps_device_identities_out_of_its_log(
    plane: Plane, tmp_path: Path
) -> None:
    need_mosquitto()
    # pytest's tmp is root-only (0700) when the suite runs as root: the broker account cannot reach it.
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq"), service_password=SVC_PW
    )
    await plane.add_devices(2)
    pw = await plane.enroll(["TAB-00000"])
    async with MosquittoBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as mosq:
        assert mosq.proc is not None
        conf = mosq.conf_path.read_text()
        assert "user root" not in conf
        assert 0 not in _uids(mosq.proc.pid), "mosquitto runs with a root uid"
        if os.geteuid() == 0:
            account = broker_account("mosquitto")
            assert account is not None and f"user {account.name}" in conf
            assert set(_uids(mosq.proc.pid)) == {account.uid}
        school = plane.school_code
        async with terminal(mosq.port, school, "TAB-00000", pw["TAB-00000"], will=False) as dev:
            await dev.publish(T.topic(school, "TAB-00000", "telemetry"), b'{"v":1}', qos=1)
            await dev.subscribe(T.topic(school, "TAB-00001", "cmd"), qos=1)  # not its own: refused or dropped
        # A credential change reloads the password file as the unprivileged account: still readable.
        pw.update(await plane.enroll(["TAB-00001"]))
        await mosq.sync()
        async with terminal(mosq.port, school, "TAB-00001", pw["TAB-00001"], will=False) as dev:
            await dev.publish(T.topic(school, "TAB-00001", "telemetry"), b'{"v":1}', qos=1)
        with pytest.raises(aiomqtt.MqttError):
            async with terminal(mosq.port, school, "TAB-00000", "wrong-password", will=False):
                pass
        log = (mosq.dir / "mosquitto.log").read_text(errors="replace")
    assert "TAB-0000" not in log, log[-2000:]


async def test_the_embedded_brokers_log_names_no_device_below_debug(plane: Plane) -> None:
    """amqtt warns "Client <id> is already connected, performing take-over": the id is a serial."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith("amqtt"):
                seen.append(record.getMessage())

    keep = Keep(level=logging.WARNING)
    keep.addFilter(HideClientIds())
    logging.getLogger().addHandler(keep)
    amqtt_logger = logging.getLogger("amqtt")
    old_level = amqtt_logger.level
    amqtt_logger.setLevel(logging.WARNING)  # the CLI's default for amqtt (CHATTY_LOGGERS)
    try:
        settings = plane.settings(broker="embedded", listen_port=free_port(), service_password=SVC_PW)
        await plane.add_devices(1)
        pw = await plane.enroll(["TAB-00000"])
        async with EmbeddedBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as emb:
            school = plane.school_code
            first = terminal(emb.port, school, "TAB-00000", pw["TAB-00000"], will=False)
            await first.__aenter__()
            try:
                # The same device again (a reboot before the old socket timed out): a take-over.
                async with terminal(emb.port, school, "TAB-00000", pw["TAB-00000"], will=False):
                    await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(aiomqtt.MqttError):
                    await first.__aexit__(None, None, None)
    finally:
        logging.getLogger().removeHandler(keep)
        amqtt_logger.setLevel(old_level)
    assert any(HIDDEN_CLIENT in m for m in seen), seen  # the warning is still there, without the id
    assert not [m for m in seen if "TAB-0000" in m], seen
