"""The district CA (`labfleet tls`): keys 0600 and never printed, the CA kept across init and renew, a
re-signed CA still trusted by terminals that hold the old copy, expiry warnings from an injected clock."""

from __future__ import annotations

import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.main import app
from fleet.services import tls
from fleet.settings import TlsSettings

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def verifies(ca_pem: str, chain: Path, name: str) -> bool:
    """Whether a terminal holding `ca_pem` accepts the chain for `name` (OpenSSL, in memory, no socket)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, chain.with_suffix(".key"))
    client = tls.client_context(ca_pem)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out, peer_in in ((cli, c_out, s_in), (srv, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError:
                return False
            peer_in.write(out.read())
        if cli.version() is not None and srv.version() is not None:
            return True
    return False


def test_init_writes_keys_readable_by_their_owner_only(tmp_path: Path) -> None:
    cfg = TlsSettings(dir=str(tmp_path / "tls"))
    infos = tls.init(cfg, ["mqtt.school.example", "10.0.0.5"], datetime.now(UTC))
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tmp_path / "tls" / key).stat().st_mode) == 0o600, key
    assert stat.S_IMODE((tmp_path / "tls" / "ca.pem").stat().st_mode) == 0o644
    ca, server = infos
    assert server.names == ("mqtt.school.example", "10.0.0.5")
    assert len(ca.sha256.split(":")) == 32
    assert verifies(tls.ca_pem(cfg), tmp_path / "tls" / "server.pem", "mqtt.school.example")
    assert not verifies(tls.ca_pem(cfg), tmp_path / "tls" / "server.pem", "mqtt.other.example")


def test_init_again_and_renew_keep_the_ca_terminals_pinned(tmp_path: Path) -> None:
    cfg = TlsSettings(dir=str(tmp_path))
    now = datetime.now(UTC)
    ca0, srv0 = tls.init(cfg, ["a.example"], now)
    pinned = tls.ca_pem(cfg)
    ca1, srv1 = tls.init(cfg, ["b.example"], now)
    assert ca1.sha256 == ca0.sha256 and srv1.sha256 != srv0.sha256 and srv1.names == ("b.example",)
    ca2, srv2 = tls.renew(cfg, now)
    assert ca2.sha256 == ca0.sha256 and srv2.names == ("b.example",) and srv2.sha256 != srv1.sha256
    # Re-signing the CA (same key, same subject): a terminal holding the old copy still verifies the server.
    ca3, _ = tls.renew(cfg, datetime.now(UTC), ca=True)
    assert ca3.sha256 != ca0.sha256
    assert verifies(pinned, tmp_path / "server.pem", "b.example")


def test_expiry_is_warned_about_within_the_window_only(tmp_path: Path) -> None:
    cfg = TlsSettings(dir=str(tmp_path), renew_warning_days=30)
    assert tls.expiring(cfg, T0) == []  # nothing made yet: nothing to warn about
    tls.init(cfg, ["a.example"], T0)
    assert tls.expiring(cfg, T0 + timedelta(days=tls.SERVER_DAYS - 31)) == []
    (warn,) = tls.expiring(cfg, T0 + timedelta(days=tls.SERVER_DAYS - 29))
    assert (warn.role, warn.days_left) == ("server", 29)
    late = tls.expiring(cfg, T0 + timedelta(days=tls.SERVER_DAYS + 1))
    assert [(e.role, e.days_left < 0) for e in late] == [("server", True)]


def test_bad_names_and_operator_owned_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(tls.TlsError, match="at least one"):
        tls.init(TlsSettings(dir=str(tmp_path)), [], T0)
    with pytest.raises(tls.TlsError, match="neither a DNS name nor an IP address"):
        tls.init(TlsSettings(dir=str(tmp_path)), ["bad name/x"], T0)
    own = TlsSettings(dir=str(tmp_path), cert_file="/etc/ssl/site.pem", key_file="/etc/ssl/site.key")
    with pytest.raises(tls.TlsError, match="operator-owned"):
        tls.renew(own, T0)


def test_the_cli_prints_fingerprints_and_never_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABFLEET_TLS__DIR", str(tmp_path))
    runner = CliRunner()
    made = runner.invoke(app, ["tls", "init", "--name", "mqtt.school.example", "--name", "127.0.0.1"])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["tls", "show"])
    assert shown.exit_code == 0, shown.output
    ca, server = tls.describe(tls.TlsFiles.from_settings(TlsSettings(dir=str(tmp_path))))
    assert ca.sha256 in shown.output and server.sha256 in shown.output
    assert "mqtt.school.example, 127.0.0.1" in shown.output
    for out in (made.output, shown.output):
        assert "PRIVATE KEY" not in out
    renewed = runner.invoke(app, ["tls", "renew"])
    assert renewed.exit_code == 0 and ca.sha256 in renewed.output and server.sha256 not in renewed.output
    refused = runner.invoke(app, ["tls", "init"])
    assert refused.exit_code == 1


def test_enrollment_answers_mqtts_and_the_ca_when_tls_is_on(tmp_path: Path) -> None:
    from fleet.settings import Settings

    cfg = TlsSettings(dir=str(tmp_path))
    tls.init(cfg, ["fleet.district.example"], T0)
    plain = Settings(mqtt={"broker": "mosquitto"}, tls=cfg)
    assert tls.broker_endpoint(plain) == tls.BrokerEndpoint("mqtt://127.0.0.1:1883", None)
    both = Settings(
        mqtt={"broker": "embedded", "tls": True, "public_host": "fleet.district.example"}, tls=cfg
    )
    assert tls.broker_endpoint(both) == tls.BrokerEndpoint(
        "mqtts://fleet.district.example:8883", tls.ca_pem(cfg)
    )
    # An external broker: never its credentials; 8883 when mqtts names no port; the CA when one is configured.
    ext = Settings(mqtt={"broker": "external", "url": "mqtts://svc:secret@mq.example"}, tls=cfg)
    assert tls.broker_endpoint(ext) == tls.BrokerEndpoint("mqtts://mq.example:8883", tls.ca_pem(cfg))
    public_ca = Settings(
        mqtt={"broker": "external", "url": "mqtts://mq.example:8884"}, tls={"dir": str(tmp_path / "none")}
    )
    assert tls.broker_endpoint(public_ca) == tls.BrokerEndpoint("mqtts://mq.example:8884", None)
