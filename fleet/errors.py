"""The one error tree. Services raise these; the API maps them to HTTP in one table."""

from __future__ import annotations

from typing import Any


class FleetError(Exception):
    """Base of every LabFleet domain error."""

    code = "fleet_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(FleetError):
    """The object does not exist, or is outside the caller's scope (the two look the same)."""

    code = "not_found"


class PermissionDenied(FleetError):
    """The caller's role does not allow the action."""

    code = "forbidden"


class Unauthenticated(FleetError):
    """No valid credentials were presented."""

    code = "unauthenticated"


class Conflict(FleetError):
    """The action clashes with existing state (a duplicate serial number, say)."""

    code = "conflict"


class InvalidInput(FleetError):
    """The input is well-formed but not acceptable; details say where and why."""

    code = "invalid_input"


class IllegalTransition(FleetError):
    """A lifecycle transition that the state machine does not allow."""

    code = "illegal_transition"


class ImportRejected(FleetError):
    """A bulk import had bad rows; nothing was committed. details is a list of row errors."""

    code = "import_rejected"


class RateLimited(FleetError):
    """Too many attempts from one source or against one credential; retry after `retry_after_s` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class FeatureUnavailable(FleetError):
    """The feature needs an optional part that is not installed; the message says how to install it."""

    code = "feature_unavailable"
