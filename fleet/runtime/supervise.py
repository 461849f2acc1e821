"""Supervision, written once: capped jittered backoff, "log the first failure, then recovered", task owners.

Every background loop in LabFleet either repeats a step on a period (presence sweep, snapshot, reports,
rollout steps) or keeps a connection alive (command publisher, rollout link, ingest subscriber). Both retry
after a failure, log only the first one and the recovery (transitions, not repetitions), and are owned by
something that cancels them and waits for them on shutdown, so no task is left pending.

Standard library only, and nothing from `fleet`: the simulators use it too (see tests/unit/test_imports.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, NoReturn, Self

# Jitter spreads the retries of many clients that failed together (a broker restart drops them all at once).
DEFAULT_JITTER = 0.3

Sleep = Callable[[float], Awaitable[Any]]


class Backoff:
    """Capped exponential backoff with +-jitter; `rng` is injectable so tests can pin the delays."""

    def __init__(
        self,
        start: float,
        cap: float,
        *,
        factor: float = 2.0,
        jitter: float = DEFAULT_JITTER,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < start <= cap or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < start <= cap, factor >= 1 and 0 <= jitter < 1")
        self.start, self.cap, self.factor, self.jitter = start, cap, factor, jitter
        self._rng = rng or random.Random()
        self._next = start

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the base, up to the cap."""
        base = self._next
        self._next = min(base * self.factor, self.cap)
        return base * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        self._next = self.start


class Retry:
    """The failure state of one supervised loop: logs its first failure and its recovery, owns its backoff."""

    def __init__(self, what: str, log: logging.Logger, backoff: Backoff | None = None) -> None:
        self.what = what
        self.log = log
        self.backoff = backoff
        self.failing = False

    def ok(self) -> None:
        """The loop works (a step succeeded, a connection is up): say "recovered" once after failures."""
        if self.failing:
            self.failing = False
            self.log.info("%s recovered", self.what)
        if self.backoff is not None:
            self.backoff.reset()

    def failed(self, err: BaseException, *, trace: bool = True) -> float | None:
        """Record a failure (logged only when it starts one); returns the backoff delay, if there is one."""
        if not self.failing:
            self.failing = True
            if trace:
                self.log.error("%s failed; retrying", self.what, exc_info=err)
            else:
                self.log.warning("%s failed (%s); retrying", self.what, err or type(err).__name__)
        return self.backoff.next() if self.backoff is not None else None


async def every(
    interval: float | Callable[[], float],
    step: Callable[[], Awaitable[Any]],
    retry: Retry,
    *,
    first_delay: float = 0.0,
    sleep: Sleep = asyncio.sleep,
) -> NoReturn:
    """Run `step` every `interval` seconds, for ever; a failing step is logged once and retried.

    After a failure the next attempt comes after the retry's backoff delay when it has one, else after the
    interval. Cancel the task to stop it.
    """
    if first_delay > 0:
        await sleep(first_delay)
    while True:
        try:
            await step()
        except Exception as err:  # noqa: BLE001 - the loop outlives a bad step; the next attempt retries it
            delay = retry.failed(err)
        else:
            retry.ok()
            delay = None
        if delay is None:
            delay = interval() if callable(interval) else interval
        await sleep(delay)


async def reconnecting(
    session: Callable[[], Awaitable[Any]],
    retry: Retry,
    errors: tuple[type[BaseException], ...],
    *,
    stopping: Callable[[], bool] = lambda: False,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Keep running `session` (one connection lifetime), with the retry's backoff between attempts.

    The session calls `retry.ok()` once it is connected; an error of `errors` ends the attempt (logged once,
    without a traceback: a lost broker is an expected condition), anything else propagates. Returns once
    `stopping()` says so after an attempt: an owner that closes the connection before it cancels the task
    cannot rely on the cancel alone, because Python 3.11's wait_for drops a cancel that lands together with
    the completion it waits for (the closed connection), and the loop would go on reconnecting.
    """
    if retry.backoff is None:
        raise ValueError("a reconnecting loop needs a backoff")
    while True:
        try:
            await session()
        except errors as err:
            delay = retry.failed(err, trace=False)
        else:
            delay = retry.backoff.next()  # the broker closed a healthy session: come back, but not in a spin
        if stopping():
            return
        await sleep(delay if delay is not None else 0.0)


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], log: logging.Logger | None = None
) -> None:
    """Cancel the tasks and wait for every one of them to finish.

    A task that had failed is logged (to `log`) rather than raised: shutdown goes on. A cancellation of the
    caller itself still propagates, after every task has been waited for.
    """
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    cancelled_self = False
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                cancelled_self = True
        except Exception:  # noqa: BLE001 - logged: shutdown goes on past a task that had failed
            (log or logging.getLogger(__name__)).exception("task %s failed", task.get_name())
    if cancelled_self:
        raise asyncio.CancelledError


class TaskOwner:
    """Named background tasks with one owner: `spawn` them, and `aclose` cancels and awaits every one."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = log

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Any:
        return iter(list(self._tasks))

    async def cancel(self, names: Iterable[str]) -> None:
        """Cancel and await the tasks with these names (the others keep running)."""
        wanted = set(names)
        await cancel_and_wait([t for t in self._tasks if t.get_name() in wanted], self._log)

    async def aclose(self) -> None:
        # Tasks spawned while others are being cancelled (a cleanup that spawns) are caught by the next pass.
        while self._tasks:
            batch = list(self._tasks)
            await cancel_and_wait(batch, self._log)
            self._tasks.difference_update(batch)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
