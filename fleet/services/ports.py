"""What the services need from the runtime, as protocols: the services stay callable without it (CLI, console,
tests), and never import the MQTT runtime."""

from __future__ import annotations

from typing import Protocol


class DevicePlanePort(Protocol):
    """The device plane as the services see it (fleet.runtime.plane.DevicePlane implements it)."""

    async def credentials_changed(
        self, username: str | None = None, *, revoked: bool = False, rotated: bool = False
    ) -> None:
        """A credential was issued, rotated or revoked: the broker must take it, and on rotation or revocation
        end the device's live session (it was opened with the old password)."""
        ...

    def wake_dispatcher(self) -> None:
        """Commands were queued: deliver them now rather than at the next pass."""
        ...

    async def reference_changed(self) -> None:
        """Devices, rooms, models, schools or timetables changed: refresh the in-memory copies."""
        ...
