"""`xkd-train`: train one experiment (config/train/*.yaml) and, with --export, write its ONNX model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xkd_ros.train.experiment import ExperimentConfig
from xkd_ros.train.trainer import BEST, train


def main(argv: list[str] | None = None) -> int:
    """xkd-train: contrastive pretraining, few-label fine-tuning and distillation, resumable."""
    parser = argparse.ArgumentParser(prog="xkd-train", description=main.__doc__)
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML (config/train/*.yaml)")
    parser.add_argument("--out", type=Path, help="run folder (default out/train/<name>); resumes if present")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override, e.g. finetune.steps=50"
    )
    parser.add_argument("--export", type=Path, help="also export the best weights to this .onnx file")
    args = parser.parse_args(argv)
    config = ExperimentConfig.load(args.config, args.set)
    out = args.out or Path("out/train") / config.name
    result = train(config, out)
    if result:  # rank 0
        summary = {
            head: round(values["miou"], 4) for head, values in result.items() if isinstance(values, dict)
        }
        print(
            f"{config.name}: validation mIoU {json.dumps(summary)} in {result['training_seconds']} s -> {out}"
        )
        if args.export:
            from xkd_ros.export import export_checkpoint, sha256

            path = export_checkpoint(out / BEST, args.export)
            print(f"{path}: sha256 {sha256(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
