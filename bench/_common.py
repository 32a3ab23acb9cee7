"""Shared by the benchmarks: timing whole commands and printing ratios from one run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def runyard_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "runyard", *args]


def time_command(
    argv: Sequence[str], repeat: int = 5, env: dict[str, str] | None = None, cwd: Path | None = None
) -> float:
    """Best wall time of `repeat` runs of a whole process (the least noisy estimate)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()}")
    return min(times)


def time_call(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def report(label: str, seconds: float, baseline: float | None = None, goal: str = "") -> None:
    ratio = f"  {seconds / baseline:6.2f}x baseline" if baseline else ""
    print(f"{label:<58} {seconds * 1000:9.1f} ms{ratio}  {goal}".rstrip())
