"""The device lifecycle state machine."""

from __future__ import annotations

from fleet.domain.enums import DeviceStatus as S
from fleet.errors import IllegalTransition

# ordered -> received -> provisioned -> in_service <-> in_repair -> retired | lost.
# Any live device can be lost; retiring is possible from stock or repair, never from "ordered".
TRANSITIONS: dict[S, frozenset[S]] = {
    S.ORDERED: frozenset({S.RECEIVED, S.LOST}),
    S.RECEIVED: frozenset({S.PROVISIONED, S.RETIRED, S.LOST}),
    S.PROVISIONED: frozenset({S.IN_SERVICE, S.IN_REPAIR, S.RETIRED, S.LOST}),
    S.IN_SERVICE: frozenset({S.IN_REPAIR, S.RETIRED, S.LOST}),
    S.IN_REPAIR: frozenset({S.IN_SERVICE, S.RETIRED, S.LOST}),
    S.RETIRED: frozenset(),
    S.LOST: frozenset(),
}

# Statuses a device may be created in (a delivery arrives ordered or received).
INITIAL_STATUSES: frozenset[S] = frozenset({S.ORDERED, S.RECEIVED, S.PROVISIONED, S.IN_SERVICE})


def check_transition(current: S, target: S) -> None:
    """Raise IllegalTransition unless current -> target is allowed."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal state)"
        raise IllegalTransition(
            f"cannot move a device from {current} to {target}; allowed from {current}: {allowed}",
            details={"from": str(current), "to": str(target), "allowed": sorted(TRANSITIONS[current])},
        )
