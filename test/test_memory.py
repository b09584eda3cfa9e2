"""keep_freed_memory: freed numpy arrays are reused instead of faulted in afresh (a subprocess each: the
setting is the whole process's)."""

import subprocess
import sys

import pytest

CHECK = """
import resource, sys
import numpy as np
from xkd_ros.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def scan():  # what a pre-processing pass does: a few 2 MiB temporaries, freed at the end
    a = np.ones(262_144 * 2)
    b = a * 2
    return float((a + b).sum())
scan()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    scan()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHECK, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in():
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 5_000  # 20 scans x 3 arrays x 512 pages, give or take what glibc kept anyway
    assert kept < default / 10
