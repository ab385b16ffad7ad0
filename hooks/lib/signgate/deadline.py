"""The internal deadline that bounds all network work of one admission request.

shell-operator never kills a hook, and the API server stops waiting after `timeoutSeconds`, so
the hook must answer before then by itself. Every wait derives its timeout from one Deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import DeadlineExceeded


@dataclass
class Deadline:
    seconds: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.start < 0:
            self.start = self.clock()

    @property
    def expires_at(self) -> float:
        return self.start + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self.clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def elapsed(self) -> float:
        return self.clock() - self.start

    def timeout(self, cap: float) -> float:
        """A timeout for one wait: at most `cap`, never beyond the deadline."""
        left = self.remaining()
        if left <= 0.0:
            raise DeadlineExceeded(f"not verified within {self.seconds:g} s")
        return min(cap, left)

    def check(self) -> None:
        if self.expired():
            raise DeadlineExceeded(f"not verified within {self.seconds:g} s")
