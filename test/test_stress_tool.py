"""tools/stress_make_test.py end to end on a tiny repository: clone, hog, runs, report, exit code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "stress_make_test.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("stress_make_test", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tiny_repository(root: Path) -> Path:
    """A committed repository whose `make test` runs pytest -ra on one passing, one failing, one skipped
    test and one that needs ../shared read-only beside the clone, as CI has it."""
    repo = root / "project"
    (repo / "test").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "shared" / "sample.txt").write_text("real data\n")
    makefile = f".PHONY: test\ntest:\n\t{sys.executable} -m pytest -ra -p no:cacheprovider test\n"
    (repo / "Makefile").write_text(makefile)
    (repo / "test" / "test_some.py").write_text(
        "import pathlib, pytest\n"
        "SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared'\n"
        "def test_passes(): pass\n"
        "def test_fails(): assert 1 == 2\n"
        "def test_skipped(): pytest.skip('why not')\n"
        "def test_shared_is_beside_and_read_only():\n"
        "    assert (SHARED / 'sample.txt').read_text() == 'real data\\n'\n"
        "    assert not (SHARED / 'sample.txt').stat().st_mode & 0o222  # no write bit (root ignores them)\n"
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "--quiet"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "tiny"], check=True)
    return repo


@pytest.mark.timeout(300)
def test_runs_report_the_failing_test_and_exit_non_zero(tmp_path, capsys):
    tool = load_tool()
    repo = tiny_repository(tmp_path)
    out = tmp_path / "out"
    code = tool.main(
        ["--repo", str(repo), "--runs", "2", "--baseline", "--hog-processes", "1", "--out", str(out)]
    )
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert [(run["run"], run["hog"]) for run in runs] == [(0, False), (1, True), (2, True)]
    for run in runs:
        assert run["exit_code"] != 0
        assert run["counts"] == {"passed": 2, "failed": 1, "skipped": 1}
        assert run["failing"] == ["test/test_some.py::test_fails"]
    assert "test_some.py::test_fails" in (out / "report.md").read_text()
    assert "0 of 3 runs passed" in capsys.readouterr().out
