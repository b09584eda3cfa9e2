"""What every benchmark here shares: the median of repeated runs after a warm-up, and writing the figures."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(run: Callable[[], object], repeat: int) -> float:
    """Median wall time of `run` in ms over `repeat` runs; one warm-up run first (first-touch page faults
    and lazy imports are not what we measure)."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def write_json(path: Path | None, results: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
