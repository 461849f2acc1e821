"""Every fuzz target, bounded for CI: a fixed number of examples from a fixed seed, well under a minute each
(pytest-timeout stops a run that is not). The 10-minute soak over fresh seeds is benchmarks/soak_fuzz.py."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import TARGETS, Counted, run

# One seed for every CI run: a failure here reproduces with the same examples on any machine.
CI_SEED = 16


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_bounded(name: str) -> None:
    target = TARGETS[name]
    counted = Counted(target.check)
    run(target, examples=target.ci_examples, seed_=CI_SEED, check=counted)
    assert counted.examples >= target.ci_examples // 2  # the run really ran (hypothesis may stop early on
    # a small input space, never at zero)


def test_a_failing_target_is_reported_with_its_example() -> None:
    """The harness would tell: a check that refuses some inputs makes the run fail (and shrinks the input)."""
    target = TARGETS["mqtt_uplink"]

    def picky(example: object) -> None:
        assert len(example[1]) < 50  # type: ignore[index]

    with pytest.raises(AssertionError):
        run(target, examples=200, seed_=CI_SEED, check=picky)
