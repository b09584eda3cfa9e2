"""Summarise a py-spy `--format raw` (folded stacks) profile: the share of samples per function, by self
time and by inclusive time, so the top costs of a path can be read without a flame-graph viewer.

Run: .venv/bin/python bench/profile_summary.py out/bench/node_path.folded [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy frames read "function (path/to/file.py:line)". Self time keeps the line (which call inside a
# function costs: a resize, a matrix product); inclusive time drops it to count a function once.
_LINE = re.compile(r":\d+\)$")


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    """(total samples, self samples per function line, inclusive samples per function)."""
    total, own, inclusive = 0, Counter(), Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in {_LINE.sub(")", frame) for frame in frames}:
            inclusive[frame] += samples
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total, own, inclusive = summarise(args.profile)
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"## {title} time, {total} samples")
        for frame, samples in counter.most_common(args.top):
            print(f"{100 * samples / total:6.1f} %  {frame}")


if __name__ == "__main__":
    main()
