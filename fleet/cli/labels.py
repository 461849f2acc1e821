"""`labfleet labels`: asset labels as a PDF, the same use case as the console's "Print labels"."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.domain.asset_labels import LAYOUTS


def labels(
    out: Annotated[Path, typer.Option("--out", help="the PDF file to write")],
    room: Annotated[int | None, typer.Option(help="a room's devices (room id)")] = None,
    school: Annotated[int | None, typer.Option(help="a school's devices (school id)")] = None,
    delivery: Annotated[
        int | None, typer.Option(help="the devices of one import (its audit entry id, action import.devices)")
    ] = None,
    serial: Annotated[
        list[str] | None, typer.Option("--serial", help="a serial number or asset tag; repeat for more")
    ] = None,
    q: Annotated[str | None, typer.Option("--q", help="serial or asset tag prefix, as the search")] = None,
    status: Annotated[str | None, typer.Option(help="only devices in this lifecycle status")] = None,
    layout: Annotated[str, typer.Option(help=" | ".join(LAYOUTS))] = "3x8",
    content: Annotated[
        str, typer.Option(help="what the QR code carries: url (the console page) | tag (the asset tag)")
    ] = "url",
    base_url: Annotated[
        str,
        typer.Option(help="the console's address in QR URLs (default: rollouts public URL, or host:port)"),
    ] = "",
    lang: Annotated[str, typer.Option(help="zh-CN | en (default: LABFLEET_LOCALE)")] = "",
) -> None:
    """Print asset labels (QR code, asset tag, serial, school) for a room, a school, a delivery or a list."""
    from fleet.cli.common import CLI, console, run_db, settings
    from fleet.domain.clock import SystemClock
    from fleet.i18n import negotiate, use_locale
    from fleet.services.asset_labels import LabelFile, Selection, print_labels

    cfg = settings()
    url = base_url or cfg.rollouts.public_base_url or f"http://{cfg.http.host}:{cfg.http.port}"
    selection = Selection(
        room_id=room,
        school_id=school,
        delivery_id=delivery,
        text=q,
        status=status,
        serials=tuple(serial or ()),
    )

    async def work(session: Any) -> LabelFile:
        with use_locale(negotiate(user=lang or None, accept_language=None, default=cfg.locale)):
            return await print_labels(
                session, CLI, SystemClock().now(), selection, layout=layout, content=content, base_url=url
            )

    result = run_db(work)
    out.write_bytes(result.pdf)
    pages = f"{result.pages} page" + ("" if result.pages == 1 else "s")
    console.print(f"{result.count} labels, {pages} ({result.layout}) -> {out}")
