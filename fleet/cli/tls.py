"""`labfleet tls`: the district CA and the server certificate for MQTT over TLS and HTTPS (issue 19)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fleet.services.tls import CertInfo

tls_app = typer.Typer(help="TLS certificates: a district CA, the server certificate.", no_args_is_help=True)

NamesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--name",
        help="DNS name or IP address terminals and browsers reach the server at (repeatable; first = CN)",
    ),
]


def _print(infos: list[CertInfo]) -> None:
    from fleet.cli.common import console
    from fleet.domain.clock import SystemClock

    now = SystemClock().now()

    def out(text: str) -> None:
        # Plain text on one line: a fingerprint holds ":cd:" and the like, which rich turns into emoji.
        console.print(text, emoji=False, markup=False, highlight=False, soft_wrap=True)

    for info in infos:
        out(f"{info.role}  {info.path}")
        out(f"  subject   {info.subject}")
        if info.names:
            out(f"  names     {', '.join(info.names)}")
        out(f"  sha256    {info.sha256}")
        out(
            f"  valid     {info.not_before:%Y-%m-%d %H:%M} .. {info.not_after:%Y-%m-%d %H:%M} UTC "
            f"({info.days_left(now)} days left)"
        )


def _fail(err: Exception) -> None:
    from fleet.cli.common import err_console

    err_console.print(f"[red]{err}[/red]")
    raise typer.Exit(1)


@tls_app.command("init")
def init(names: NamesOption = None) -> None:
    """Create the district CA (kept when one exists) and a server certificate for the given names; keys are
    written 0600 in LABFLEET_TLS__DIR and never printed."""
    from fleet.cli.common import console, settings
    from fleet.domain.clock import SystemClock
    from fleet.services import tls

    try:
        infos = tls.init(settings().tls, names or [], SystemClock().now())
    except tls.TlsError as err:
        _fail(err)
        return
    _print(infos)
    console.print(
        "Give terminals the CA certificate (enrollment answers it as ca_pem); restart `labfleet serve` to "
        "serve the new certificate."
    )


@tls_app.command("show")
def show() -> None:
    """Print the CA and server certificates in use: names, SHA-256 fingerprints, expiry."""
    from fleet.cli.common import settings
    from fleet.services import tls

    try:
        infos = tls.describe(tls.TlsFiles.from_settings(settings().tls))
    except tls.TlsError as err:
        _fail(err)
        return
    _print(infos)


@tls_app.command("renew")
def renew(
    names: NamesOption = None,
    ca: Annotated[
        bool, typer.Option("--ca", help="re-sign the CA certificate too (same key: terminals keep it)")
    ] = False,
) -> None:
    """Issue a fresh server certificate (same names unless --name is given) from the district CA."""
    from fleet.cli.common import console, settings
    from fleet.domain.clock import SystemClock
    from fleet.services import tls

    try:
        infos = tls.renew(settings().tls, SystemClock().now(), names=names or None, ca=ca)
    except tls.TlsError as err:
        _fail(err)
        return
    _print(infos)
    console.print("Restart `labfleet serve` (and its broker) to serve the renewed certificate.")
