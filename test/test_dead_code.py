"""No dead code in xkd_ros: vulture finds nothing at confidence 60, its lowest level (every kind of finding:
unused functions, classes, methods, attributes, variables, properties, imports, arguments, unreachable code).

The tests, benchmarks, launch files and tools are scanned too, as users: a public function a benchmark or a
test calls is not dead (message_filters' and cv_bridge's upstream APIs are kept whole on purpose). Findings in
them are not this test's business. What vulture cannot see (callbacks a library calls, fields read through
asdict) is in test/vulture_whitelist.py, each with its reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

MIN_CONFIDENCE = 60
USERS = ("test", "bench", "launch", "tools")


def test_vulture_finds_no_dead_code_in_the_package():
    pytest.importorskip("vulture", reason="vulture is in the test extra")
    result = subprocess.run(
        [sys.executable, "-m", "vulture", "xkd_ros", *USERS, f"--min-confidence={MIN_CONFIDENCE}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 3), result.stderr  # 3: dead code found; anything else: vulture failed
    findings = [line for line in result.stdout.splitlines() if line.startswith("xkd_ros/")]
    assert not findings, (
        "dead code (remove it, or if a library uses it, add it to test/vulture_whitelist.py saying why):\n"
        + "\n".join(findings)
    )
