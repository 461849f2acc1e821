"""The simulator stops its tasks one way: each is cancelled and awaited, a failed one is logged (the report
still gets built), and a cancel of the caller itself is not swallowed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from simulators.district.tasks import cancel_and_wait


async def test_cancel_and_wait_cancels_all_and_logs_a_failed_task_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise RuntimeError("broken helper")

    failed = asyncio.create_task(boom(), name="sim-broken")
    await asyncio.sleep(0)  # it fails before the stop
    running = asyncio.create_task(asyncio.Event().wait(), name="sim-running")
    with caplog.at_level(logging.ERROR, logger="simulators.district.tasks"):
        await cancel_and_wait({failed, running})
    assert running.cancelled() and failed.done()
    assert [r.getMessage() for r in caplog.records] == ["simulation task sim-broken failed"]


async def test_cancel_and_wait_lets_a_cancel_of_its_caller_through() -> None:
    started, cleaning_up = asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning_up.set()
            await asyncio.Event().wait()  # cleans up slowly: its stopper waits for it, until cancelled again

    helper = asyncio.create_task(slow_to_stop())
    await started.wait()
    stopper = asyncio.create_task(cancel_and_wait([helper]))
    await cleaning_up.wait()  # the stopper has cancelled the helper and waits for it
    stopper.cancel()  # (asyncio passes this cancel on to the helper the stopper awaits)
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert helper.cancelled()
