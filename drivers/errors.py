"""The one exception tree of the drivers package."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error raised by `drivers`."""


class FrameError(DriverError):
    """A frame failed to decode; `reason` is a short bounded label used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LinkError(DriverError):
    """The byte link failed or could not be opened."""


class LinkClosed(LinkError):
    """The byte link is gone (cable pulled, port closed, peer hung up)."""


class DeviceTimeout(DriverError):
    """The device did not answer in time, after all retries."""


class ProtocolError(DriverError):
    """The device answered, but not as the protocol says it should."""


class DeviceError(DriverError):
    """The device reported an error for a well-formed request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FirmwareError(DriverError):
    """A firmware image is unusable (hash mismatch, wrong family, too large)."""
