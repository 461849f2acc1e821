"""The device lifecycle state machine."""

from __future__ import annotations

import itertools

import pytest

from fleet.domain.enums import DeviceStatus as S
from fleet.domain.lifecycle import TRANSITIONS, check_transition
from fleet.errors import IllegalTransition


def test_the_documented_path_is_allowed() -> None:
    path = [S.ORDERED, S.RECEIVED, S.PROVISIONED, S.IN_SERVICE, S.IN_REPAIR, S.IN_SERVICE, S.RETIRED]
    for a, b in itertools.pairwise(path):
        check_transition(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (S.ORDERED, S.IN_SERVICE),
        (S.RECEIVED, S.IN_REPAIR),
        (S.RETIRED, S.IN_SERVICE),
        (S.LOST, S.RECEIVED),
        (S.IN_SERVICE, S.ORDERED),
        (S.ORDERED, S.RETIRED),
    ],
)
def test_shortcuts_and_resurrections_are_refused(a: S, b: S) -> None:
    with pytest.raises(IllegalTransition, match=f"from {a} to {b}"):
        check_transition(a, b)


def test_retired_and_lost_are_terminal_and_every_status_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.RETIRED] == TRANSITIONS[S.LOST] == frozenset()
