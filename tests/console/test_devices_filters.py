"""The device search's filter bar: the room list follows the chosen school; the chosen room stays."""

from __future__ import annotations

import httpx

from tests.conftest import Api
from tests.console.helpers import add_user, sign_in
from tests.factories import build_world


async def test_the_room_list_follows_the_chosen_school(api: Api) -> None:
    w = await build_world(api)
    await add_user(api.sessions, api.clock, "root")
    transport = api.client._transport  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await sign_in(c, "root")).status_code == 303
        every = room_select((await c.get("/devices")).text)
        assert f'value="{w.room_a}"' in every and f'value="{w.room_b}"' in every
        chosen = room_select((await c.get(f"/devices?school={w.school_a}&room={w.room_a}")).text)
        assert f'<option value="{w.room_a}" selected>' in chosen
        assert f'value="{w.room_b}"' not in chosen


def room_select(page: str) -> str:
    start = page.index('id="room"')
    return page[start : page.index("</select>", start)]
