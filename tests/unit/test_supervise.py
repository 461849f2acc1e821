"""fleet.runtime.supervise: backoff, "first failure then recovered" logging, periodic and reconnecting loops,
and task owners that leave nothing pending."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from fleet.runtime.supervise import Backoff, Retry, TaskOwner, cancel_and_wait, every, reconnecting

LOG = logging.getLogger("tests.supervise")


def test_backoff_doubles_to_its_cap_within_the_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, jitter=0.25, rng=random.Random(7))
    delays = [b.next() for _ in range(6)]
    for got, base in zip(delays, (1, 2, 4, 8, 8, 8), strict=True):
        assert base * 0.75 <= got <= base * 1.25
    assert len(set(delays)) == 6  # jittered: no two retries at the same instant
    b.reset()
    assert 0.75 <= b.next() <= 1.25


def test_backoff_is_reproducible_with_an_injected_random_source() -> None:
    a = Backoff(0.2, 5.0, rng=random.Random(1))
    b = Backoff(0.2, 5.0, rng=random.Random(1))
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(5.0, 1.0)


async def test_a_periodic_step_logs_its_first_failure_then_recovered_and_nothing_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = iter([None, "boom", "boom", "boom", None, None])
    slept: list[float] = []
    done = asyncio.Event()

    async def step() -> None:
        o = next(outcomes, None)
        if o:
            raise RuntimeError(o)

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 6:
            done.set()
            await asyncio.Event().wait()

    with caplog.at_level(logging.INFO, logger="tests.supervise"):
        task = asyncio.create_task(every(10.0, step, Retry("the sweep", LOG), sleep=sleep))
        await done.wait()
        await cancel_and_wait([task])
    assert [r.getMessage() for r in caplog.records] == ["the sweep failed; retrying", "the sweep recovered"]
    assert slept == [10.0] * 6  # without a backoff a failed step is retried after the interval


async def test_a_periodic_step_with_a_backoff_retries_sooner_and_resets_on_success() -> None:
    outcomes = iter(["x", "x", None, "x"])
    slept: list[float] = []

    async def step() -> None:
        if next(outcomes, None):
            raise RuntimeError

    async def sleep(s: float) -> None:
        slept.append(s)
        if len(slept) == 4:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await every(60.0, step, Retry("x", LOG, Backoff(1.0, 30.0, jitter=0.0)), sleep=sleep)
    assert slept == [1.0, 2.0, 60.0, 1.0]


async def test_reconnecting_backs_off_on_expected_errors_and_lets_others_through() -> None:
    attempts: list[float] = []
    retry = Retry("link", LOG, Backoff(0.5, 2.0, jitter=0.0))

    async def session() -> None:
        if len(attempts) == 3:
            retry.ok()
            raise KeyError("a bug, not a lost broker")
        raise ConnectionError("refused")

    async def sleep(s: float) -> None:
        attempts.append(s)

    with pytest.raises(KeyError):
        await reconnecting(session, retry, (ConnectionError,), sleep=sleep)
    assert attempts == [0.5, 1.0, 2.0]
    assert not retry.failing


async def test_cancel_and_wait_cancels_all_and_logs_a_failed_task_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise RuntimeError("broken helper")

    failed = asyncio.create_task(boom(), name="sim-broken")
    await asyncio.sleep(0)  # it fails before the stop
    running = asyncio.create_task(asyncio.Event().wait(), name="sim-running")
    with caplog.at_level(logging.ERROR, logger="tests.supervise"):
        await cancel_and_wait({failed, running}, LOG)
    assert running.cancelled() and failed.done()
    assert [r.getMessage() for r in caplog.records] == ["task sim-broken failed"]


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


async def test_a_task_owner_leaves_no_task_pending_even_one_spawned_during_shutdown() -> None:
    owner = TaskOwner(LOG)
    late: list[asyncio.Task[None]] = []

    async def spawns_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            late.append(owner.spawn(asyncio.Event().wait(), "late"))
            raise

    async with owner:
        first = owner.spawn(spawns_on_cancel(), "first")
        other = owner.spawn(asyncio.sleep(3600), "other")
        await asyncio.sleep(0)
    assert first.cancelled() and other.cancelled() and late and late[0].cancelled()
    assert len(owner) == 0


def test_the_suite_fails_on_a_task_destroyed_while_pending() -> None:
    """The guard in tests/conftest.py sees asyncio's report of a task left pending when its loop went away."""
    from tests.conftest import PENDING_TASKS

    loop = asyncio.new_event_loop()
    loop.create_task(asyncio.sleep(3600), name="forgotten")
    loop.run_until_complete(asyncio.sleep(0))  # the task starts and waits
    loop.close()
    del loop
    import gc

    gc.collect()
    seen = PENDING_TASKS.take()  # taken here, so this test itself does not fail on it
    assert any("forgotten" in s for s in seen), seen


async def test_reconnecting_returns_when_its_owner_is_stopping_even_if_a_cancel_was_lost() -> None:
    """An owner closes the connection, then cancels; the session ending cleanly must end the loop too."""
    stopping = False
    attempts = 0

    async def session() -> None:
        nonlocal stopping, attempts
        attempts += 1
        stopping = True  # the owner closed the link while this attempt ran: it ends without an error

    async def sleep(_s: float) -> None:
        raise AssertionError("no reconnect after the owner stopped")

    await reconnecting(
        session, Retry("link", LOG, Backoff(0.1, 1.0)), (OSError,), stopping=lambda: stopping, sleep=sleep
    )
    assert attempts == 1
