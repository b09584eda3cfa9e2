"""`xkd-train`: train one experiment (config/train/*.yaml) and, with --export, write its ONNX model."""

from __future__ import annotations

import argparse
import json
import sys
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
    parser.add_argument(
        "--size",
        default="",
        metavar="NAME",
        help="one of the config's `sizes` (e.g. full: the GPU scale under torchrun), applied before --set; "
        "without it the config's own, reduced scale that runs on 2 CPU cores",
    )
    parser.add_argument("--export", type=Path, help="also export the best weights to this .onnx file")
    args = parser.parse_args(argv)
    try:
        config = ExperimentConfig.load(args.config, args.set, size=args.size)
    except ValueError as error:
        parser.error(str(error))
    out = args.out or Path("out/train") / config.name
    try:
        result = train(config, out)
    except (ValueError, OSError) as error:  # bad data, config or files: one line naming them, no traceback
        print(f"xkd-train: {error}", file=sys.stderr)
        return 2
    if result:  # rank 0
        print(f"{config.name}: validation mIoU {_summary(result)} in {result['training_seconds']} s -> {out}")
        if "test" in result:
            step = result["test_step"]
            print(f"{config.name}: test mIoU {_summary(result['test'])} (best.pt, step {step})")
        if args.export:
            from xkd_ros.export import export_checkpoint, sha256

            path = export_checkpoint(out / BEST, args.export)
            print(f"{path}: sha256 {sha256(path)}")
    return 0


def _summary(result: dict) -> str:
    heads = ("lidar", "fused", "deployed")
    return json.dumps({head: round(result[head]["miou"], 4) for head in heads if head in result})


if __name__ == "__main__":
    raise SystemExit(main())
