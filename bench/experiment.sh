#!/usr/bin/env bash
# The experiment of docs/results.md, on the 2-core CPU: the LiDAR-only baseline, fusion (fused head, and its
# distilled LiDAR-only head), and fusion without contrastive pretraining (ablation), at 10% and 100% of the
# training frames labelled; one seed, the same data, steps and optimiser everywhere.
# Run: bash bench/experiment.sh   (about 30 minutes here; resumes where it stopped)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -f out/synth/split.yaml ] || "$bin/xkd-synth" --out out/synth --train 200 --val 40 --seed 0
for percent in 10 100; do
  fraction=$(awk "BEGIN {print $percent / 100}")
  "$bin/xkd-train" --config config/train/lidar_only.yaml --out "out/train/lidar_only_$percent" \
    --set "data.label_fraction=$fraction"
  "$bin/xkd-train" --config config/train/fusion.yaml --out "out/train/fusion_$percent" \
    --set "data.label_fraction=$fraction"
  "$bin/xkd-train" --config config/train/fusion.yaml --out "out/train/fusion_no_pretrain_$percent" \
    --set "data.label_fraction=$fraction" pretrain.steps=0
done
"$bin/python" bench/results_table.py out/train | tee out/train/results.md
