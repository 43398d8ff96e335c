#!/usr/bin/env bash
# Weight-sharing quality on one GPU in about 8 minutes, printing each figure:
#   1. PPO and REINFORCE x 2 seeds of the nb201-ws preset, shrunk to fit, packed on the one GPU by
#      Tune (a quarter of the GPU per trial): each trial's derived cell, its whole-split accuracy with
#      shared weights and, when the cell is in the sample, NAS-Bench-201's stand-alone test accuracy;
#   2. the Kendall tau / Spearman rho of a supernet trained as that preset trains it (its first 10
#      epochs), on 200 cells of nb201-sample (bench/ranking.py --ground-truth), scored on the whole
#      validation split and as the preset's reward, warm-up children uniform and fair.
# Without CUDA it says so in one line and runs the same steps at toy sizes (a smoke test: the figures
# mean nothing; it takes ~1.5 minutes on 2 cores). The GPU sizes are estimated from an earlier H200 run
# (the 5-cell supernet at half a GPU trained ~2,500 images/s; Tune's trial start 15-25 s): this script
# has not run on a GPU yet; `compare` is cut at 300 s and each ranking at 240 s.
#
#   bash bench/gpu_ws_quality.sh DATA_DIR [SAMPLE_JSON]   # CIFAR-10 (arrays or torchvision); the sample's cifar10_1000.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RAYNAS=${RAYNAS:-$([ -x .venv/bin/raynas ] && echo .venv/bin/raynas || echo raynas)}
DATA_DIR=${1:?usage: bash bench/gpu_ws_quality.sh DATA_DIR [SAMPLE_JSON]}
SAMPLE=${2:-../shared/data/nb201-sample/cifar10_1000.json}
# where every log and trial goes (kept: runs/ is the project's output folder; a device host sets OUT)
OUT=${OUT:-runs/gpu-ws-quality-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -f "$SAMPLE" ] || { echo "no sample table at $SAMPLE (give it as the second argument)"; exit 2; }

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"CUDA: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
    # 16 epochs (10 of warm-up) on 10,000 training / 5,000 validation images; 100 children per epoch
    SIZES=(--epochs 16 --workers 1 --gpus-per-worker 0.25 --set weight_sharing.warmup_epochs=10
           --set weight_sharing.archs_per_epoch=100 --set weight_sharing.derive_samples=50
           --set weight_sharing.cpus_per_worker=3 --set data.train_size=10000 --set data.valid_size=5000)
    RANKING=(--epochs 10 --children 200 --draws 3 --gpus-per-worker 1 --set data.train_size=10000
             --set data.valid_size=5000)
    LIMIT=300
else
    echo "no CUDA: the same steps at toy sizes (a smoke test, not GPU figures)"
    SIZES=(--epochs 3 --workers 1 --gpus-per-worker 0 --set weight_sharing.warmup_epochs=2
           --set weight_sharing.archs_per_epoch=8 --set weight_sharing.derive_samples=4
           --set weight_sharing.cpus_per_worker=1 --set data.train_size=256 --set data.valid_size=128
           --set supernet.num_cells=1 --set supernet.channels=4 --set data.eval_batch_size=64)
    RANKING=(--epochs 1 --children 10 --draws 1 --set data.train_size=256 --set data.valid_size=128
             --set supernet.num_cells=1 --set supernet.channels=4 --set data.eval_batch_size=64)
    LIMIT=600
fi

echo "== 1/2 PPO and REINFORCE x 2 seeds on one GPU (configs/nb201-ws.yaml, shrunk): $OUT/tune"
start=$(date +%s)
status=0
timeout "$LIMIT" "$RAYNAS" compare --config configs/nb201-ws.yaml --data-dir "$DATA_DIR" --algos ppo,reinforce \
    --seeds 2 "${SIZES[@]}" --storage "$OUT/tune" --name ws-quality > "$OUT/compare.log" 2>&1 || status=$?
grep -E '^\[raynas\] (trial .* finished|experiment|report)' "$OUT/compare.log" || true
[ "$status" = 0 ] || { echo "compare exited $status:"; tail -20 "$OUT/compare.log"; }
echo "compare: $(( $(date +%s) - start )) s"
SAMPLE="$SAMPLE" EXPERIMENT="$OUT/tune/ws-quality" "$PY" - <<'EOF'
import json
import os
from pathlib import Path

truth = json.loads(Path(os.environ["SAMPLE"]).read_text())
for trial in sorted(Path(os.environ["EXPERIMENT"]).glob("*/params.json")):
    params = json.loads(trial.read_text())
    best = trial.parent / "best_arch.json"
    if not best.is_file():
        print(f"{params['algo']:<10} seed {params['seed']}: no derived cell (see {trial.parent}/error.txt)")
        continue
    derived = json.loads(best.read_text())
    known = truth.get(derived["arch"])
    lookup = f"NAS-Bench-201 test {known['test']:.2f} %" if known else "not in the sample"
    print(f"{params['algo']:<10} seed {params['seed']}: {derived['arch']}  whole split {derived['valid_accuracy']:.4f}"
          f" (shared weights); {lookup}")
EOF

echo "== 2/2 supernet ranking against nb201-sample, warm-up children uniform and fair"
for sampling in uniform fair; do
    start=$(date +%s)
    status=0
    timeout 240 "$PY" bench/ranking.py --data-dir "$DATA_DIR" --ground-truth "$SAMPLE" --config configs/nb201-ws.yaml \
        --sampling "$sampling" --only "whole validation split" "${RANKING[@]}" > "$OUT/ranking-$sampling.log" 2>&1 \
        || status=$?
    grep -E '^(nb201:|scoring|reward: as|whole validation split  |shared-weight)' "$OUT/ranking-$sampling.log" || true
    [ "$status" = 0 ] || { echo "ranking exited $status:"; tail -20 "$OUT/ranking-$sampling.log"; }
    echo "ranking ($sampling): $(( $(date +%s) - start )) s"
done
