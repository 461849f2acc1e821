"""MQTT over TLS on both managed brokers (issue 19): a terminal holding the district CA connects; a wrong CA,
an expired and a wrong-name certificate are refused with an error that says which; TLS 1.0/1.1 are refused;
and with the plain listener off nothing answers on 1883 while the service's own clients still work."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from fleet.domain import wire
from fleet.runtime.brokers import BrokerAuthority, EmbeddedBroker, MosquittoBroker, free_port
from fleet.services import tls
from fleet.settings import Settings, TlsSettings
from tests.mqtt.mqtt_plane import TS0, Plane, need_mosquitto, terminal

SVC_USER, SVC_PW = "labfleet-service", "svc-tls-secret"
T = wire.Topics("labfleet")
ME = "TAB-00000"


def now() -> datetime:
    # The TLS stacks check validity against the real clock, so certificates are issued relative to it.
    return datetime.now(UTC)


def make_ca(d: Path, names: list[str], at: datetime | None = None) -> TlsSettings:
    cfg = TlsSettings(dir=str(d))
    tls.init(cfg, names, at or now())
    return cfg


def tls_settings(plane: Plane, kind: str, cfg: TlsSettings, *, plain: bool) -> Settings:
    return Settings(
        database_url=plane.url,
        mqtt={
            "topic_prefix": "labfleet",
            "broker": kind,
            "listen_port": free_port(),
            "tls": True,
            "tls_port": free_port(),
            "plain_listener": plain,
            "data_dir": str(plane.tmp / "mq"),
            "service_password": SVC_PW,
        },
        tls=cfg,
    )


async def start(plane: Plane, settings: Settings) -> Any:
    authority = BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)
    cls = EmbeddedBroker if settings.mqtt.broker == "embedded" else MosquittoBroker
    return cls(settings, authority)


@pytest.fixture(params=["embedded", "mosquitto"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "mosquitto":
        need_mosquitto()
    return str(request.param)


@pytest.fixture
async def tls_broker(plane: Plane, kind: str, tmp_path: Path) -> AsyncIterator[tuple[Any, Settings, str]]:
    cfg = make_ca(tmp_path / "tls", ["localhost", "127.0.0.1"])
    settings = tls_settings(plane, kind, cfg, plain=False)
    await plane.add_devices(1)
    password = (await plane.enroll([ME]))[ME]
    async with await start(plane, settings) as broker:
        yield broker, settings, password


def client_ctx(cfg: TlsSettings) -> ssl.SSLContext:
    return tls.client_context(tls.ca_pem(cfg))


async def test_a_terminal_with_the_districts_ca_connects_and_its_telemetry_arrives(
    plane: Plane, tls_broker: tuple[Any, Settings, str]
) -> None:
    broker, settings, password = tls_broker
    a = broker.address
    got: list[bytes] = []
    async with aiomqtt.Client(
        a.host, a.port, identifier="svc-tls", username=a.username, password=a.password
    ) as svc:
        await svc.subscribe(T.topic(plane.school_code, ME, "telemetry"), qos=1)
        async with terminal(
            settings.mqtt.tls_port, plane.school_code, ME, password, tls_context=client_ctx(settings.tls)
        ) as c:
            body = {"v": 1, "seq": 1, "ts": TS0, "battery": 80}
            await c.publish(T.topic(plane.school_code, ME, "telemetry"), json.dumps(body), qos=1)
            async for msg in svc.messages:
                got.append(bytes(msg.payload))
                break
    assert json.loads(got[0])["battery"] == 80


async def test_the_plain_listener_refuses_connections_when_it_is_off(
    plane: Plane, tls_broker: tuple[Any, Settings, str]
) -> None:
    _broker, settings, password = tls_broker
    with pytest.raises(aiomqtt.MqttError) as err:
        async with terminal(settings.mqtt.listen_port, plane.school_code, ME, password, timeout=3):
            pass
    assert "refused" in str(err.value).lower()
    # Plain MQTT spoken to the TLS port is not MQTT to it either: no CONNACK, the connection ends.
    with pytest.raises(aiomqtt.MqttError):
        async with terminal(settings.mqtt.tls_port, plane.school_code, ME, password, timeout=3):
            pass


async def test_a_wrong_ca_is_refused_with_a_clear_error(
    plane: Plane, tls_broker: tuple[Any, Settings, str], tmp_path: Path
) -> None:
    _broker, settings, password = tls_broker
    other = make_ca(tmp_path / "other-ca", ["localhost", "127.0.0.1"])
    with pytest.raises(aiomqtt.MqttError) as err:
        async with terminal(
            settings.mqtt.tls_port, plane.school_code, ME, password, tls_context=client_ctx(other), timeout=5
        ):
            pass
    assert "certificate verify failed" in str(err.value)
    # The server sends its chain (certificate, then its CA): a CA the terminal does not hold is named as such.
    assert "self-signed certificate in certificate chain" in str(err.value)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_old_tls_versions_are_refused(plane: Plane, tls_broker: tuple[Any, Settings, str]) -> None:
    _broker, settings, password = tls_broker

    def ctx(highest: ssl.TLSVersion) -> ssl.SSLContext:
        c = client_ctx(settings.tls)
        c.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        c.maximum_version = highest
        c.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would speak TLS 1.0/1.1: only the server says no
        return c

    port, school = settings.mqtt.tls_port, plane.school_code
    async with terminal(port, school, ME, password, tls_context=ctx(ssl.TLSVersion.TLSv1_2)):
        pass  # the same client, allowed TLS 1.2, connects
    with pytest.raises(aiomqtt.MqttError) as err:
        async with terminal(port, school, ME, password, tls_context=ctx(ssl.TLSVersion.TLSv1_1), timeout=5):
            pass
    # mosquitto answers with a protocol-version alert; Python's server (embedded) closes the handshake.
    assert "[SSL: " in str(err.value)


@pytest.mark.parametrize(
    ("case", "names", "age_days", "error"),
    [
        ("expired", ["localhost", "127.0.0.1"], 500, "certificate has expired"),
        ("wrong name", ["mqtt.other-school.example"], 0, "IP address mismatch"),
    ],
)
async def test_an_expired_or_wrong_name_server_certificate_is_refused_with_a_clear_error(
    plane: Plane, kind: str, tmp_path: Path, case: str, names: list[str], age_days: int, error: str
) -> None:
    cfg = make_ca(tmp_path / "tls", names, now() - timedelta(days=age_days))
    if age_days:  # the CA is still valid (ten years); only the server certificate ran out
        assert tls.describe(tls.TlsFiles.from_settings(cfg))[1].not_after < now()
    settings = tls_settings(plane, kind, cfg, plain=False)
    await plane.add_devices(1)
    password = (await plane.enroll([ME]))[ME]
    async with await start(plane, settings):
        with pytest.raises(aiomqtt.MqttError) as err:
            async with terminal(
                settings.mqtt.tls_port,
                plane.school_code,
                ME,
                password,
                tls_context=client_ctx(cfg),
                timeout=5,
            ):
                pass
    assert "certificate verify failed" in str(err.value), case
    assert error in str(err.value), case


async def test_both_listeners_serve_devices_when_plain_is_left_on(
    plane: Plane, kind: str, tmp_path: Path
) -> None:
    """The transition: plain and TLS beside each other; a device enrolled after start connects on both."""
    cfg = make_ca(tmp_path / "tls", ["127.0.0.1"])
    settings = tls_settings(plane, kind, cfg, plain=True)
    async with await start(plane, settings) as broker:
        await plane.add_devices(1)
        password = (await plane.enroll([ME]))[ME]
        await broker.sync()
        for port, ctx in ((settings.mqtt.listen_port, None), (settings.mqtt.tls_port, client_ctx(cfg))):
            async with terminal(port, plane.school_code, ME, password, tls_context=ctx) as c:
                granted = await c.subscribe(T.topic(plane.school_code, ME, "cmd"), qos=1)
                assert [int(getattr(g, "value", g)) for g in granted] == [1], port


def test_no_device_listener_at_all_is_a_settings_error(plane: Plane, tmp_path: Path) -> None:
    settings = tls_settings(plane, "embedded", TlsSettings(dir=str(tmp_path)), plain=False)
    settings.mqtt.tls = False
    with pytest.raises(ValueError, match="PLAIN_LISTENER=false needs LABFLEET_MQTT__TLS=true"):
        EmbeddedBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW))
