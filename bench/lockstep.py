"""Step-by-step alternation of training runs in one process, so background load on a shared machine falls on
every run alike (bench/mlm_throughput.py, bench/overhead.py): each run lives in a thread, clocks its optimizer
steps, and hands a baton to the next run after every step."""
from __future__ import annotations

import threading
import time


class Baton:
    """Lets exactly one run execute at a time, handing over after every optimizer step (cyclic order), so
    the three methods interleave step by step and share whatever background load the machine has."""

    def __init__(self, order: list[str]):
        self.order, self.done = list(order), set()
        self.turn = self.order[0]
        self.cv = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.turn == name)

    def _advance(self) -> None:
        active = [n for n in self.order if n not in self.done]
        if not active:
            self.turn = None
            return
        i = self.order.index(self.turn)
        for k in range(1, len(self.order) + 1):
            nxt = self.order[(i + k) % len(self.order)]
            if nxt not in self.done:
                self.turn = nxt
                break
        self.cv.notify_all()

    def pass_on(self, name: str) -> None:
        with self.cv:
            if self.turn == name:
                self._advance()

    def finish(self, name: str) -> None:
        with self.cv:
            self.done.add(name)
            if self.turn == name:
                self._advance()


class Clock:
    """Per-step durations of one run. A step's time runs from the end of the previous step (or the run's
    start) to the end of this optimizer step, so data loading, forward, backward, clipping, the optimizer and
    the framework's own per-step work all count. In lock-step mode the run waits for its turn between steps
    (not counted) and keeps the turn after its last step, so its teardown overlaps no other run."""

    def __init__(self, name: str, steps: int, baton: Baton | None):
        self.name, self.steps, self.baton = name, steps, baton
        self.durations: list[float] = []
        self.t = 0.0

    def begin(self) -> None:
        if self.baton:
            self.baton.wait(self.name)
        self.t = time.perf_counter()

    def step_end(self) -> None:
        now = time.perf_counter()
        self.durations.append(now - self.t)
        if self.baton and len(self.durations) < self.steps:
            self.baton.pass_on(self.name)
            self.baton.wait(self.name)
            now = time.perf_counter()
        self.t = now

    def end(self) -> None:
        if self.baton:
            self.baton.finish(self.name)
