"""Seeds x rows: the experiment protocol of docs/results.md, run and summarised from one YAML file.

A protocol file (config/protocol/*.yaml) names the data (and the command that generates it when missing), the
seeds, and the rows: an experiment config plus overrides each. Every (row, seed) is one `xkd-train` run into
<out>/<row>/seed<seed>, which selects its checkpoint on the validation split and scores it once on the test
split of unseen scenes (`data.test`); finished runs are skipped, so the command resumes where it stopped.
A row's overrides may name `{root}` (the protocol's data) and `{seed}` (e.g. to start from the same seed's
run of an earlier row).
Runs go seed by seed (every row of seed 0, then seed 1, ...), so a partial protocol still compares rows on the
same seeds. The summary gives each row's test mIoU as mean +- std over seeds and, against the `baseline` row,
the paired difference (same seed: same labelled frames and batch order) with its 95 % confidence half-width
(Student t, n - 1 degrees of freedom): a difference whose interval excludes 0 is resolved, one that does not
is within the noise of this protocol.

Run:  .venv/bin/python bench/protocol.py config/protocol/cameras_needed.yaml [--summary-only]
Writes <out>/summary.md and <out>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
HEADS = ("deployed", "fused", "lidar")


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    config: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    out: Path
    seeds: tuple[int, ...]
    data_root: str
    generate: tuple[str, ...]
    common: tuple[str, ...]
    baseline: str
    reference: str  # a second row the deployed output is compared with (e.g. plain fusion); "" for none
    lidar_baseline: str  # the row the LiDAR-only heads are compared with (default: baseline)
    rows: tuple[Row, ...]

    @classmethod
    def load(cls, path: Path) -> Protocol:
        values = yaml.safe_load(path.read_text()) or {}
        try:
            root = values["data"]["root"]
            rows = tuple(
                Row(
                    name=row["name"],
                    title=row.get("title", row["name"]),
                    config=row["config"],
                    overrides=tuple(row.get("set", [])),  # {root} and {seed} filled in per run
                )
                for row in values["rows"]
            )
            protocol = cls(
                name=values["name"],
                title=values.get("title", values["name"]),
                out=Path(values["out"]),
                seeds=tuple(int(seed) for seed in values["seeds"]),
                data_root=root,
                generate=tuple(command.format(root=root) for command in values["data"].get("generate", [])),
                common=tuple(item.format(root=root) for item in values.get("set", [])),
                baseline=values["baseline"],
                reference=values.get("reference", ""),
                lidar_baseline=values.get("lidar_baseline", values["baseline"]),
                rows=rows,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: missing or malformed protocol key {error}") from None
        for key in ("baseline", "reference", "lidar_baseline"):
            name = getattr(protocol, key)
            if name and name not in {row.name for row in rows}:
                raise ValueError(f"{path}: {key} {name!r} is not one of the rows")
        return protocol


def run_dir(protocol: Protocol, row: Row, seed: int) -> Path:
    return protocol.out / row.name / f"seed{seed}"


def ensure_data(protocol: Protocol) -> None:
    """Generate the protocol's data set with its own commands when it is not there yet."""
    if (Path(protocol.data_root) / "split.yaml").is_file():
        return
    bin_dir = Path(sys.executable).parent
    for command in protocol.generate:
        words = shlex.split(command)
        words[0] = str(bin_dir / words[0]) if (bin_dir / words[0]).is_file() else words[0]
        print(f"[protocol] {command}", flush=True)
        subprocess.run(words, check=True)


def run_all(protocol: Protocol, only: set[str]) -> None:
    ensure_data(protocol)
    for seed in protocol.seeds:
        for row in protocol.rows:
            if only and row.name not in only:
                continue
            out = run_dir(protocol, row, seed)
            if (out / "metrics.json").is_file():
                continue
            command = [sys.executable, "-m", "xkd_ros.train.cli", "--config", row.config, "--out", str(out)]
            overrides = [item.format(root=protocol.data_root, seed=seed) for item in row.overrides]
            command += ["--set", f"seed={seed}", *protocol.common, *overrides]
            print(f"[protocol] {row.name} seed {seed}: {shlex.join(command[2:])}", flush=True)
            started = time.perf_counter()
            subprocess.run(command, check=True)
            print(f"[protocol] {row.name} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def half_width(std: float, count: int) -> float:
    """95 % confidence half-width of a mean of `count` values with sample std `std`."""
    return T95.get(count - 1, 1.96) * std / math.sqrt(count) if count > 1 else math.nan


def summarise(protocol: Protocol) -> dict[str, Any]:
    """Per row and head: test mIoU per seed, mean, std; paired differences against the baseline row's LiDAR
    head (the LiDAR-only heads against the lidar_baseline row's: a distilled head is judged against the same
    3-D branch trained without cameras) and, for the deployed output, the reference row's deployed output."""
    results: dict[str, Any] = {"protocol": protocol.name, "title": protocol.title, "rows": {}}
    per_seed: dict[str, dict[int, dict]] = {}
    for row in protocol.rows:
        runs = {}
        for seed in protocol.seeds:
            path = run_dir(protocol, row, seed) / "metrics.json"
            if path.is_file():
                runs[seed] = json.loads(path.read_text())
        per_seed[row.name] = runs
    for row in protocol.rows:
        runs = per_seed[row.name]
        if not runs:
            continue
        summary: dict[str, Any] = {"title": row.title, "seeds": sorted(runs), "heads": {}}
        for head in HEADS:
            values = {
                seed: run["test"][head]["miou"] for seed, run in runs.items() if head in run.get("test", {})
            }
            if not values:
                continue
            mean, std = mean_std(list(values.values()))
            entry = {"per_seed": values, "mean": mean, "std": std}
            against = protocol.lidar_baseline if head == "lidar" else protocol.baseline
            if row.name != against:
                entry["vs_baseline"] = _paired(values, per_seed[against], "lidar")
            if head == "deployed" and protocol.reference and row.name != protocol.reference:
                entry["vs_reference"] = _paired(values, per_seed[protocol.reference], "deployed")
            summary["heads"][head] = entry
        summary["val_best_step"] = [run.get("test_step") for run in runs.values()]
        summary["minutes"] = mean_std([run.get("training_seconds", math.nan) / 60 for run in runs.values()])
        summary["per_class"] = _per_class_means(list(runs.values()))
        results["rows"][row.name] = summary
    return results


def _paired(values: dict[int, float], other: dict[int, dict], head: str) -> dict[str, float] | None:
    """Mean, std and 95 % half-width of the per-seed differences to `other`'s `head` (seeds both have)."""
    differences = [
        value - other[seed]["test"][head]["miou"]
        for seed, value in values.items()
        if head in other.get(seed, {}).get("test", {})
    ]
    if not differences:
        return None
    mean, std = mean_std(differences)
    return {"mean": mean, "std": std, "ci95": half_width(std, len(differences)), "n": len(differences)}


def _per_class_means(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean test IoU per class and head over the seeds (classes absent from the test frames are skipped)."""
    means: dict[str, dict[str, float]] = {}
    for head in HEADS:
        per_class: dict[str, list[float]] = {}
        for run in runs:
            for name, value in run.get("test", {}).get(head, {}).get("iou", {}).items():
                if value is not None:
                    per_class.setdefault(name, []).append(value)
        if per_class:
            means[head] = {name: sum(v) / len(v) for name, v in per_class.items()}
    return means


def _cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    std = "" if math.isnan(entry["std"]) else f" +- {100 * entry['std']:.1f}"
    return f"{100 * entry['mean']:.1f}{std}"


def _delta(entry: dict | None, key: str = "vs_baseline") -> str:
    if not entry or not entry.get(key):
        return "-"
    d = entry[key]
    if math.isnan(d["ci95"]):
        return f"{100 * d['mean']:+.1f} (n=1)"
    resolved = "resolved" if abs(d["mean"]) > d["ci95"] else "within noise"
    return f"{100 * d['mean']:+.1f} +- {100 * d['ci95']:.1f} ({resolved})"


def markdown(summary: dict[str, Any], protocol: Protocol) -> str:
    lines = [
        f"### {summary['title']}",
        "",
        f"Test split mIoU (%), mean +- std over seeds {list(protocol.seeds)}; checkpoint selected on the "
        f"validation split; paired differences (per seed) against `{protocol.baseline}` (LiDAR heads: "
        f"`{protocol.lidar_baseline}`)"
        + (f" and `{protocol.reference}`" if protocol.reference else "")
        + " with their 95 % intervals.",
        "",
        "| row | seeds | deployed | fused head | LiDAR-only head | deployed - baseline "
        "| LiDAR head - baseline |"
        + (f" deployed - {protocol.reference} |" if protocol.reference else "")
        + " minutes a run |",
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if protocol.reference else "") + "---:|",
    ]
    for row in protocol.rows:
        result = summary["rows"].get(row.name)
        if not result or not result["heads"]:  # e.g. a row that only trains what another row starts from
            continue
        heads = result["heads"]
        minutes, _ = result["minutes"]
        lines.append(
            f"| {result['title']} | {len(result['seeds'])} | {_cell(heads.get('deployed'))} | "
            f"{_cell(heads.get('fused'))} | {_cell(heads.get('lidar'))} | {_delta(heads.get('deployed'))} | "
            f"{_delta(heads.get('lidar'))} |"
            + (f" {_delta(heads.get('deployed'), 'vs_reference')} |" if protocol.reference else "")
            + f" {minutes:.1f} |"
        )
    rows = [row for row in protocol.rows if summary["rows"].get(row.name, {}).get("heads")]
    classes = next(
        (list(summary["rows"][row.name]["per_class"].get("lidar", {})) for row in rows if row.name), []
    )
    if classes:
        lines += [
            "",
            "Per-class test IoU (%), mean over seeds (deployed output; LiDAR-only head for LiDAR-only rows):",
            "",
            "| class | " + " | ".join(row.name for row in rows) + " |",
            "|---|" + "---:|" * len(rows),
        ]
        for name in classes:
            cells = []
            for row in rows:
                per_class = summary["rows"][row.name]["per_class"]
                head = per_class.get("deployed", per_class.get("lidar", {}))
                cells.append(f"{100 * head[name]:.1f}" if name in head else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", type=Path, help="config/protocol/*.yaml")
    parser.add_argument("--summary-only", action="store_true", help="summarise the finished runs, train none")
    parser.add_argument("--rows", nargs="*", default=[], help="run only these rows (all by default)")
    args = parser.parse_args(argv)
    try:
        protocol = Protocol.load(args.protocol)
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"protocol: {error}", file=sys.stderr)
        return 2
    if not args.summary_only:
        run_all(protocol, set(args.rows))
    summary = summarise(protocol)
    protocol.out.mkdir(parents=True, exist_ok=True)
    (protocol.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary, protocol)
    (protocol.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
