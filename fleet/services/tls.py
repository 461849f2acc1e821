"""Encryption on the wire: the district CA and the server certificate (`labfleet tls init|show|renew`), their
expiry for /readyz and the console, and the TLS contexts of the brokers, `serve` and the service's clients.

Air-gapped and filtered school sites often cannot use a public CA, so `tls init` makes a private one. Keys are
ECDSA P-256: every TLS 1.2 stack has it, and a handshake costs the broker a fraction of an RSA-2048 one, which
matters when 10,000 terminals connect at the 08:00 bell. Operators with their own certificates set
`LABFLEET_TLS__CERT_FILE`, `KEY_FILE` and `CA_FILE` instead; nothing here writes those.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.errors import InvalidInput
from fleet.settings import Settings, TlsSettings

# Ten years: the CA is what every terminal pins; replacing it means touching every terminal, so it outlives
# the devices' five-year service life. `tls renew --ca` re-signs it with the same key, so a pinned old copy
# still verifies new server certificates.
CA_DAYS = 3650
# 397 days, the longest a browser accepts for a server certificate: a yearly renewal, warned about 30 days
# ahead (TlsSettings.renew_warning_days).
SERVER_DAYS = 397
# Issued a little in the past, so a terminal whose clock runs a few minutes behind still accepts it.
BACKDATE = timedelta(minutes=5)
# TLS 1.2 is the oldest version without known practical breaks; older terminals must be updated, not served.
MIN_VERSION = ssl.TLSVersion.TLSv1_2


class TlsError(InvalidInput):
    """A certificate or key that cannot be used (missing, unreadable, operator-owned for init/renew)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the server certificate chain, its key and the CA certificate are read from."""

    cert: Path
    key: Path
    ca: Path
    ca_key: Path
    operator_owned: bool

    @classmethod
    def from_settings(cls, cfg: TlsSettings) -> TlsFiles:
        d = Path(cfg.dir)
        return cls(
            cert=Path(cfg.cert_file) if cfg.cert_file else d / "server.pem",
            key=Path(cfg.key_file) if cfg.key_file else d / "server.key",
            ca=Path(cfg.ca_file) if cfg.ca_file else d / "ca.pem",
            ca_key=d / "ca.key",
            operator_owned=bool(cfg.cert_file or cfg.key_file or cfg.ca_file),
        )


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What `tls show` prints and the expiry warning reads."""

    role: str  # "ca" or "server"
    path: Path
    subject: str
    names: tuple[str, ...]
    sha256: str  # colon-separated hex, as terminals' tools print it
    not_before: datetime
    not_after: datetime

    def days_left(self, now: datetime) -> int:
        return (self.not_after - now).days


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only: created 0600, never briefly world-readable."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)  # the umask cannot widen it, but an old tmp file could have other bits
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _check_names(names: list[str]) -> list[str]:
    clean = [n.strip() for n in names if n.strip()]
    if not clean:
        raise TlsError("give at least one DNS name or IP address terminals reach the server at")
    for n in clean:
        try:
            ipaddress.ip_address(n)
        except ValueError:
            if not all(c.isalnum() or c in "-.*" for c in n) or n.startswith(("-", ".")):
                raise TlsError(f"{n!r} is neither a DNS name nor an IP address") from None
    return clean


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def _new_ca(key: ec.EllipticCurvePrivateKey, name: str, now: datetime, days: int) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certs=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_server(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[str],
    now: datetime,
    days: int = SERVER_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for `names` (DNS names and IP addresses), signed by the CA."""
    names = _check_names(names)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _load_ca(files: TlsFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise TlsError(f"cannot read the district CA in {files.ca.parent}: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("the CA key is not an ECDSA key made by `labfleet tls init`")
    return cert, key


def _refuse_operator_owned(files: TlsFiles) -> None:
    if files.operator_owned:
        raise TlsError(
            "LABFLEET_TLS__CERT_FILE/KEY_FILE/CA_FILE point at operator-owned files: renew them with the CA "
            "that issued them, not with `labfleet tls`"
        )


def init(
    cfg: TlsSettings, names: list[str], now: datetime, *, ca_name: str = "LabFleet district CA"
) -> list[CertInfo]:
    """Create the district CA (unless one is there: it is kept, terminals pin it) and a server certificate
    for `names`. Blocking file I/O: for the CLI."""
    files = TlsFiles.from_settings(cfg)
    _refuse_operator_owned(files)
    names = _check_names(names)
    files.ca.parent.mkdir(parents=True, exist_ok=True)
    if files.ca.exists() and files.ca_key.exists():
        ca_cert, ca_key = _load_ca(files)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _new_ca(ca_key, ca_name, now, CA_DAYS)
        _write_private(files.ca_key, _key_pem(ca_key))
        _write_public(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    _issue_into(files, ca_cert, ca_key, names, now)
    return describe(files)


def renew(
    cfg: TlsSettings, now: datetime, *, names: list[str] | None = None, ca: bool = False
) -> list[CertInfo]:
    """A fresh server certificate (same names unless given); with `ca`, the CA re-signed with its own key and
    subject, so terminals holding the old CA certificate still verify the new server certificate."""
    files = TlsFiles.from_settings(cfg)
    _refuse_operator_owned(files)
    ca_cert, ca_key = _load_ca(files)
    if names is None:
        names = list(describe_file(files.cert, "server").names)
    if ca:
        subject = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        ca_cert = _new_ca(ca_key, str(subject), now, CA_DAYS)
        _write_public(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    _issue_into(files, ca_cert, ca_key, names, now)
    return describe(files)


def _issue_into(
    files: TlsFiles,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[str],
    now: datetime,
) -> None:
    cert, key = issue_server(ca_cert, ca_key, names, now)
    _write_private(files.key, _key_pem(key))
    # The chain a server presents: its certificate, then the CA's (terminals holding only the CA verify it).
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    _write_public(files.cert, chain)


def describe_file(path: Path, role: str) -> CertInfo:
    """The first certificate in a PEM file."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise TlsError(f"cannot read the {role} certificate {path}: {err}") from err
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(
            [str(n) for n in san.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        names = ()
    fp = cert.fingerprint(hashes.SHA256()).hex().upper()
    return CertInfo(
        role=role,
        path=path,
        subject=cert.subject.rfc4514_string(),
        names=names,
        sha256=":".join(fp[i : i + 2] for i in range(0, len(fp), 2)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def describe(files: TlsFiles) -> list[CertInfo]:
    return [describe_file(files.ca, "ca"), describe_file(files.cert, "server")]


@dataclass(frozen=True, slots=True)
class Expiry:
    """A certificate that expires within the warning window (or has expired)."""

    role: str
    not_after: datetime
    days_left: int


def expiring(cfg: TlsSettings, now: datetime) -> list[Expiry]:
    """Certificates in use that expire within `renew_warning_days`; blocking file reads (two small files)."""
    files = TlsFiles.from_settings(cfg)
    out = []
    for path, role in ((files.ca, "ca"), (files.cert, "server")):
        if not path.exists():
            continue
        info = describe_file(path, role)
        if info.not_after - now <= timedelta(days=cfg.renew_warning_days):
            out.append(Expiry(role, info.not_after, info.days_left(now)))
    return out


def server_context(cfg: TlsSettings) -> ssl.SSLContext:
    """The context a TLS listener serves with: TLS 1.2+ and the configured certificate chain and key."""
    return server_context_files(TlsFiles.from_settings(cfg))


def server_context_files(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as err:
        raise TlsError(
            f"cannot load the server certificate {files.cert} and key {files.key} ({err}); "
            "run `labfleet tls init --name <host>` or set LABFLEET_TLS__CERT_FILE and KEY_FILE"
        ) from err
    return ctx


def client_context(ca_pem: str) -> ssl.SSLContext:
    """What a terminal (or the edge agent) does: trust only the given CA, check the name, TLS 1.2+."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = MIN_VERSION
    return ctx


def loopback_client_context(files: TlsFiles) -> ssl.SSLContext:
    """The service talking to its own broker child over TLS: the CA pins the certificate, and the name is
    not checked (the broker is reached by its listen address, which need not be in the certificate)."""
    ctx = ssl.create_default_context(cafile=str(files.ca))
    ctx.minimum_version = MIN_VERSION
    ctx.check_hostname = False
    return ctx


def ca_pem(cfg: TlsSettings) -> str:
    """The CA certificate terminals pin (blocking read of one small file)."""
    path = TlsFiles.from_settings(cfg).ca
    try:
        return path.read_text()
    except OSError as err:
        raise TlsError(f"cannot read the CA certificate {path}: {err}") from err


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where enrollment tells a terminal to connect, and the CA certificate it verifies the server with."""

    url: str
    ca_pem: str | None


def broker_endpoint(settings: Settings) -> BrokerEndpoint:
    """mqtts://<public host>:<tls port> and the CA when a managed broker serves TLS (preferred over plain);
    an external broker's URL without its credentials, with the configured CA when it is mqtts://. Blocking
    read of one small file."""
    cfg = settings.mqtt
    if cfg.broker in ("embedded", "mosquitto"):
        host = cfg.public_host or cfg.listen_host
        if cfg.tls:
            return BrokerEndpoint(f"mqtts://{host}:{cfg.tls_port}", ca_pem(settings.tls))
        return BrokerEndpoint(f"mqtt://{host}:{cfg.listen_port}", None)
    parts = urlsplit(cfg.url)  # never hand out the service's own credentials from the URL
    if parts.scheme == "mqtts":
        ca = ca_pem(settings.tls) if TlsFiles.from_settings(settings.tls).ca.exists() else None
        return BrokerEndpoint(f"mqtts://{parts.hostname}:{parts.port or 8883}", ca)
    return BrokerEndpoint(f"{parts.scheme}://{parts.hostname}:{parts.port or 1883}", None)


def in_use(settings: Settings) -> bool:
    """Whether this deployment serves TLS itself (then its certificates' expiry matters to it)."""
    return settings.mqtt.tls or settings.http.tls


async def expiry_warnings(settings: Settings, now: datetime) -> list[Expiry]:
    """Certificates in use that expire within the warning window; none when nothing here serves TLS, and an
    unreadable certificate is not a warning here (the listener that needs it fails at start, loudly)."""
    if not in_use(settings):
        return []
    try:
        return await asyncio.to_thread(expiring, settings.tls, now)
    except TlsError:
        return []
