"""Fixtures shared by the reliability suite: one hostile fleet per session, and a tally of
fuzz examples that is printed at the end (run with -s to see it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.reliability.hostile import HostileFleet


@pytest.fixture(scope="session")
def fleet() -> Iterator[HostileFleet]:
    started = HostileFleet.start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def fuzz_examples() -> Iterator[Counter[str]]:
    """Fuzz tests count the examples they ran here, by input kind."""
    tally: Counter[str] = Counter()
    yield tally
    if tally:
        parts = ", ".join(f"{kind} {count}" for kind, count in sorted(tally.items()))
        print(f"\nfuzz examples run: {sum(tally.values())} in total ({parts})")
