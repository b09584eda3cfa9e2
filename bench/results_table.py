"""Markdown tables of the experiment (bench/experiment.sh) from each run's metrics.json.

Run: .venv/bin/python bench/results_table.py out/train
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [  # (run folder prefix, head in metrics.json, what the row is)
    ("lidar_only", "lidar", "LiDAR-only baseline"),
    ("fusion", "fused", "fusion, fused head on every point"),
    ("fusion", "deployed", "fusion, deployed (fused where a camera sees, distilled LiDAR-only elsewhere)"),
    ("fusion", "lidar", "fusion's distilled LiDAR-only head"),
    ("fusion_no_pretrain", "deployed", "fusion without contrastive pretraining, deployed output"),
    ("fusion_no_pretrain", "lidar", "fusion without contrastive pretraining, distilled LiDAR-only head"),
]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "out/train")
    percents = sorted(
        {int(p.name.rsplit("_", 1)[1]) for p in root.glob("*_*") if p.name.rsplit("_", 1)[1].isdigit()}
    )
    runs = {
        p.name: json.loads((p / "metrics.json").read_text())
        for p in root.iterdir()
        if (p / "metrics.json").is_file()
    }
    print("| model | " + " | ".join(f"mIoU {p}% labels" for p in percents) + " | training time |")
    print("|---|" + "---:|" * (len(percents) + 1))
    for prefix, head, title in ROWS:
        cells, seconds = [], []
        for percent in percents:
            run = runs.get(f"{prefix}_{percent}", {})
            cells.append(f"{100 * run[head]['miou']:.1f}" if head in run else "-")
            seconds.append(run.get("training_seconds", 0))
        print(
            f"| {title} | " + " | ".join(cells) + f" | {' / '.join(f'{s / 60:.0f} min' for s in seconds)} |"
        )
    for percent in percents:
        names = [
            (f"lidar_only_{percent}", "lidar", "LiDAR-only"),
            (f"fusion_{percent}", "deployed", "fusion"),
            (f"fusion_{percent}", "lidar", "distilled"),
        ]
        present = [(runs[n], h, t) for n, h, t in names if n in runs]
        if not present:
            continue
        classes = list(present[0][0][present[0][1]]["iou"])
        print(f"\nPer-class IoU (%), {percent}% labels\n")
        print("| class | " + " | ".join(t for _, _, t in present) + " |")
        print("|---|" + "---:|" * len(present))
        for name in classes:
            values = [run[h]["iou"][name] for run, h, _ in present]
            print(f"| {name} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main()
