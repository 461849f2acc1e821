"""The import's pause of the cyclic garbage collector ends with the block, however the block ends."""

from __future__ import annotations

import gc

import pytest

from fleet.services.import_files import gc_paused


def test_the_collector_is_off_inside_the_block_and_on_again_after_it() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_failing_block_turns_the_collector_back_on() -> None:
    with pytest.raises(ValueError, match="bad row"), gc_paused():
        raise ValueError("bad row")
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
