#!/usr/bin/env python3
"""`make test` on a fresh clone, N times in a row, while a CPU hog keeps every core busy.

CI runs in a fresh clone of the repository with a read-only copy of ../shared beside it, on machines that may
be doing other work; a test that needs a quiet machine fails there by chance. This reproduces that: it clones
the committed HEAD (uncommitted changes are not tested, as in CI) into a temporary folder, copies ../shared
beside the clone read-only, starts one busy-looping process per core, runs `make test` N times and stops the
hog however the runs end. The first run of a fresh clone also creates .venv (about a minute with a warm pip
cache); the report marks that run.

    python3 tools/stress_make_test.py                      # 10 runs under the hog
    python3 tools/stress_make_test.py --runs 3 --baseline  # one quiet run first, for comparison
    python3 tools/stress_make_test.py --runs 1 --pytest-args test/test_sync.py   # a quick check

Writes out/stress/report.json, report.md and one log per run; exits 1 if any run failed. Standard library
only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a developer's shell or an outer `make` may have set that CI's clean environment has not.
SCRUBBED = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
# pytest's last line, framed by = signs unless -q: "3 failed, 250 passed, 4 skipped in 312.41s (0:05:12)".
SUMMARY = re.compile(
    r"^(?:=+ )?(?P<text>(?:\d+ [a-z]+|no tests ran)[^=]* in [\d.]+s(?: \([\d:]+\))?)(?: =+)?$"
)
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)")
FAILURE = re.compile(r"^(FAILED|ERROR) (?P<test>.+?)(?: - .*)?$")  # -ra's lines; ids may hold spaces


@dataclass
class Run:
    """One `make test`: what it returned, how long it took, and pytest's own account of it."""

    run: int
    hog: bool
    exit_code: int
    wall_s: float
    created_venv: bool
    timed_out: bool
    summary: str | None  # pytest's last line, e.g. "3 failed, 250 passed, 4 skipped in 312.4s (0:05:12)"
    counts: dict[str, int] = field(default_factory=dict)
    failing: list[str] = field(default_factory=list)  # test ids of FAILED and ERROR lines
    log: str = ""


def parse_pytest(output: str) -> tuple[str | None, dict[str, int], list[str]]:
    """The summary line, its counts (passed, failed, ...) and the failing test ids of a pytest -ra output."""
    summary = None
    for line in output.splitlines():
        match = SUMMARY.match(line.strip())
        if match:
            summary = match["text"]
    counts: dict[str, int] = {}
    if summary:
        for number, kind in COUNT.findall(summary.split(" in ")[0]):
            counts[kind.rstrip("s") if kind in ("errors", "warnings") else kind] = int(number)
    failing = []
    for line in output.splitlines():
        match = FAILURE.match(line)
        if match and match["test"] not in failing:
            failing.append(match["test"])
    return summary, counts, failing


def clean_environment(pytest_args: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in SCRUBBED}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:  # an activated venv's python3 would become the base of the clone's .venv
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
        )
    env.pop("PYTEST_ADDOPTS", None)
    if pytest_args:
        env["PYTEST_ADDOPTS"] = pytest_args
    return env


@contextmanager
def cpu_hog(processes: int) -> Iterator[list[int]]:
    """`processes` busy loops, stopped (by their pids) when the block ends, by return, error or signal."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield [hog.pid for hog in hogs]
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


@contextmanager
def fresh_clone(repo: Path, rev: str, keep: bool) -> Iterator[tuple[Path, str]]:
    """A clone of `repo` at `rev` in a temporary folder, with a read-only copy of repo/../shared beside it."""
    top = Path(tempfile.mkdtemp(prefix="xkd-stress-"))
    clone = top / repo.name
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(repo), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", rev], check=True)
        commit = subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        shared = repo.parent / "shared"
        if shared.is_dir():
            shutil.copytree(shared, top / "shared", symlinks=True)
            _set_writable(top / "shared", False)
        yield clone, commit
    finally:
        if keep:
            print(f"kept {top}")
        else:
            _set_writable(top, True)
            shutil.rmtree(top, ignore_errors=True)


def _set_writable(root: Path, writable: bool) -> None:
    """Add or remove write permission on everything under `root` (not following links)."""
    paths = [root, *root.rglob("*")] if root.exists() else []
    for path in paths:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


def make_test(clone: Path, number: int, hog: bool, env: dict[str, str], timeout_s: float, logs: Path) -> Run:
    """One `make test` in its own process group (killed whole on timeout), its output to a log file."""
    created_venv = not (clone / ".venv" / ".installed").exists()
    log = logs / f"run-{number:02d}{'' if hog else '-quiet'}.log"
    start = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "test"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            exit_code, timed_out = process.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            exit_code, timed_out = process.wait(), True
        except BaseException:  # interrupted: take make and pytest down with us
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    wall_s = time.monotonic() - start
    summary, counts, failing = parse_pytest(log.read_text(errors="replace"))
    return Run(
        number, hog, exit_code, round(wall_s, 1), created_venv, timed_out, summary, counts, failing, str(log)
    )


def markdown(report: dict) -> str:
    lines = [
        f"# `make test` under load: {report['commit'][:10]}",
        "",
        f"{report['date']}; {report['cpus']} CPUs, {report['hog_processes']} busy-loop processes during the "
        f"runs marked hog; PYTEST_ADDOPTS={report['pytest_args'] or '(none)'}. "
        "The run marked * created .venv in the fresh clone (pip install, counted in its time).",
        "",
        "| run | hog | exit | wall (s) | passed | failed | errors | skipped | failing tests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        counts = run["counts"]
        failing = ", ".join(f"`{test}`" for test in run["failing"])
        if run["timed_out"]:
            failing = f"timed out {failing}"
        elif run["exit_code"] and not run["summary"]:
            failing = "no pytest summary (lint or set-up failed, see its log)"
        cells = [
            run["run"],
            "yes" if run["hog"] else "no",
            run["exit_code"],
            f"{run['wall_s']}{' *' if run['created_venv'] else ''}",
            *(counts.get(kind, 0) for kind in ("passed", "failed", "error", "skipped")),
            failing,
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", report["verdict"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", "-n", type=int, default=10, help="runs of `make test` under the hog (10)")
    parser.add_argument("--baseline", action="store_true", help="one run without the hog first, to compare")
    parser.add_argument(
        "--hog-processes", type=int, default=os.cpu_count() or 1, help="busy loops (one a core)"
    )
    parser.add_argument("--pytest-args", help="PYTEST_ADDOPTS for every run, e.g. test/test_sync.py")
    parser.add_argument("--repo", type=Path, default=REPO, help="repository to clone (this one)")
    parser.add_argument("--rev", default="HEAD", help="commit to test (HEAD)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "stress", help="report folder")
    parser.add_argument("--run-timeout", type=float, default=3600, help="seconds before a run is killed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _interrupted)
    args.out.mkdir(parents=True, exist_ok=True)
    env = clean_environment(args.pytest_args)
    runs: list[Run] = []
    started = time.monotonic()
    commit, interrupted = args.rev, False
    try:
        with fresh_clone(args.repo.resolve(), args.rev, args.keep) as (clone, commit):
            print(f"clone of {args.repo} at {commit[:10]} in {clone}", flush=True)
            if args.baseline:
                runs.append(make_test(clone, 0, False, env, args.run_timeout, args.out))
                print(describe(runs[-1]), flush=True)
            with cpu_hog(args.hog_processes) as pids:
                print(f"CPU hog: {len(pids)} busy loops, pids {pids}", flush=True)
                for number in range(1, args.runs + 1):
                    runs.append(make_test(clone, number, True, env, args.run_timeout, args.out))
                    print(describe(runs[-1]), flush=True)
    except KeyboardInterrupt:
        interrupted = True  # the report below says what ran; the hog and the run are stopped already
    failed = [run for run in runs if run.exit_code]
    verdict = (
        f"{len(runs) - len(failed)} of {len(runs)} runs passed"
        + (f"; failed: runs {', '.join(str(run.run) for run in failed)}" if failed else "")
        + ("; interrupted" if interrupted else "")
        + f"; {time.monotonic() - started:.0f} s in all."
    )
    report = {
        "commit": commit,
        "repo": str(args.repo.resolve()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "hog_processes": args.hog_processes,
        "pytest_args": args.pytest_args,
        "runs": [asdict(run) for run in runs],
        "verdict": verdict,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    print(verdict)
    print(f"report: {args.out / 'report.md'}, {args.out / 'report.json'}")
    return 1 if failed or interrupted or not runs else 0


def _interrupted(signum: int, frame: object) -> None:
    """SIGTERM (CI cancelling, `timeout`) unwinds like Ctrl-C, so the hog and the run are stopped."""
    raise KeyboardInterrupt


def describe(run: Run) -> str:
    what = run.summary or ("timed out" if run.timed_out else "no pytest summary")
    venv = ", includes creating .venv" if run.created_venv else ""
    failing = f"; failing: {' '.join(run.failing)}" if run.failing else ""
    load = "hog" if run.hog else "quiet"
    return f"run {run.run} ({load}): exit {run.exit_code}, {run.wall_s} s{venv}: {what}{failing}"


if __name__ == "__main__":
    sys.exit(main())
