"""Upstream's own tests of sensor_msgs_py, cv_bridge and message_filters, run unchanged against xkd_ros.

The README says code written for those packages runs with the imports swapped; this checks it the way a user
porting code would. A temporary shim (packages named ``sensor_msgs_py``, ``cv_bridge`` and
``message_filters`` whose names come from xkd_ros) goes first on the PYTHONPATH of a pytest subprocess over
the upstream files in ../shared/peers/tests (copied there with their licences and commits; see its README).
Upstream code stays out of the project: the files are read from there, and only cv_bridge's conversions.py
is changed, ``.tostring()`` read as ``.tobytes()`` (numpy removed ``tostring``). The assertion is on the
exact set of test ids that passed, so a test that is skipped, errors or is not collected fails it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import REPO

PEERS_TESTS = REPO.parent / "shared" / "peers" / "tests"
UPSTREAM_FILES = (
    "test_point_cloud2.py",  # ros2/common_interfaces sensor_msgs_py/test/test_point_cloud2.py
    "cv_bridge_conversions.py",  # ros-perception/vision_opencv cv_bridge/test/conversions.py
    "cv_bridge_enumerants.py",  # ros-perception/vision_opencv cv_bridge/test/enumerants.py
    "message_filters_test_approxsync.py",  # ros2/message_filters test/test_approxsync.py
    "message_filters_test_cache.py",  # ros2/message_filters test/test_message_filters_cache.py
)
# The one edit: numpy 2 removed ndarray.tostring, which conversions.py still calls.
EDITS = {"cv_bridge_conversions.py": (".tostring()", ".tobytes()")}

SHIM = {
    "sensor_msgs_py/__init__.py": "",
    "sensor_msgs_py/point_cloud2.py": "from xkd_ros.msgs.point_cloud2 import *  # noqa: F403\n",
    # what `import cv_bridge` offers (rolling's __init__.py), no more
    "cv_bridge/__init__.py": (
        "from xkd_ros.msgs.image import (  # noqa: F401\n"
        "    CvBridge, CvBridgeError, cvtColorForDisplay, getCvType\n"
        ")\n"
    ),
    "message_filters/__init__.py": "from xkd_ros.message_filters import *  # noqa: F403\n",
}

pytestmark = pytest.mark.skipif(
    not all((PEERS_TESTS / name).is_file() for name in UPSTREAM_FILES),
    reason="no ../shared/peers/tests (upstream test files; CI has them)",
)


def expected_ids(path: Path) -> set[tuple[str, str, str]]:
    """(module, class, method) of every test upstream's file defines: the ``test*`` methods of its
    unittest.TestCase classes (all five files are unittest style), as pytest collects them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        (path.stem, node.name, item.name)
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.FunctionDef) and item.name.startswith("test")
    }


def junit_outcomes(report: Path) -> dict[tuple[str, str, str], str]:
    """Each test case of a junit XML: (module, class, method) -> passed / failed / error / skipped."""
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module, _, cls = case.get("classname", "").rpartition(".")
        child = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = {"failure": "failed", None: "passed"}.get(child, child)
        outcomes[(module, cls, case.get("name", ""))] = outcome
    return outcomes


@pytest.mark.dds  # message_filters' cache test calls rclpy.init() and creates a node
@pytest.mark.timeout(300)
def test_upstream_suites_pass_unchanged_through_the_shim(tmp_path, ros_env):
    shim = tmp_path / "shim"
    for relative, text in SHIM.items():
        (shim / relative).parent.mkdir(parents=True, exist_ok=True)
        (shim / relative).write_text(text, encoding="utf-8")
    run = tmp_path / "upstream"
    run.mkdir()
    (run / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not the project's settings
    expected = set()
    for name in UPSTREAM_FILES:
        source = PEERS_TESTS / name
        if name in EDITS:
            old, new = EDITS[name]
            text = source.read_text(encoding="utf-8")
            assert old in text, f"{source}: no {old!r} to read as {new!r}; update EDITS"
            (run / name).write_text(text.replace(old, new), encoding="utf-8")
        else:
            shutil.copyfile(source, run / name)
        expected |= expected_ids(run / name)
    # README.md names the count; a changed upstream file must update both.
    assert len(expected) == 27, f"README names 27 upstream tests; {PEERS_TESTS} define {sorted(expected)}"

    report = tmp_path / "junit.xml"
    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO), *filter(None, [env.get("PYTHONPATH", "")])])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            "-q",
            f"--junitxml={report}",
            f"--rootdir={run}",
            *UPSTREAM_FILES,
        ],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert report.is_file(), f"upstream pytest run wrote no report:\n{result.stdout}\n{result.stderr}"
    outcomes = junit_outcomes(report)
    passed = {case for case, outcome in outcomes.items() if outcome == "passed"}
    not_passed = {case: outcomes.get(case, "not collected") for case in sorted(expected - passed)}
    assert not not_passed, (
        f"upstream tests not passing through the shim: {not_passed}\n{result.stdout[-6000:]}"
    )
    assert passed == expected, f"unexpected extra test ids: {sorted(passed - expected)}"
    assert result.returncode == 0, result.stdout[-6000:]
