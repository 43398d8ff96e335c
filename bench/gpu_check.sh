#!/usr/bin/env bash
# GPU readiness in one run (at most ~8 minutes on one CUDA GPU), printing each figure:
#   1. supernet training throughput at the paper presets' sizes (bench/supernet_throughput.py --preset paper),
#   2. controller throughput, ms per architecture (bench/controller_throughput.py),
#   3. two epochs of an `enas-macro` search (configs/enas-macro.yaml) with one GPU per supernet worker
#      (one worker, 200 architectures per epoch), and the seconds each phase took (metrics.csv).
# It runs unchanged without CUDA: it says so in one line, then runs the same checks at CPU sizes.
#
#   bash bench/gpu_check.sh [DATA_DIR]    # DATA_DIR: CIFAR-10 (arrays or torchvision); default: generated images
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DATA_DIR=${1:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    CUDA=1
    "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"CUDA: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
else
    CUDA=0
    echo "no CUDA: running the same checks at CPU sizes (these are not GPU figures)"
fi

echo "== 1/3 supernet training throughput"
if [ "$CUDA" = 1 ]; then
    "$PY" bench/supernet_throughput.py --preset paper --steps 30
else
    "$PY" bench/supernet_throughput.py --preset cpu --steps 3 --threads 2
fi

echo "== 2/3 controller throughput (sampling + learner update, free evaluator)"
"$PY" bench/controller_throughput.py --iters "$([ "$CUDA" = 1 ] && echo 5 || echo 2)" --warmup 1

echo "== 3/3 two epochs of enas-macro, one GPU per supernet worker"
CUDA=$CUDA DATA_DIR=$DATA_DIR timeout 330 "$PY" - <<'EOF'
import csv
import json
import os
import tempfile
from pathlib import Path

from services.config import load_config
from services.search import run_search

cuda = os.environ["CUDA"] == "1"
out = tempfile.mkdtemp(prefix="gpu-check-")
overrides = {"out": out, "weight_sharing.epochs": 2, "weight_sharing.archs_per_epoch": 200,
             "weight_sharing.workers": 1, "weight_sharing.gpus_per_worker": 1 if cuda else 0,
             "weight_sharing.cpus_per_worker": 4 if cuda else 2, "weight_sharing.derive_samples": 20,
             "weight_sharing.checkpoint_every": 1, "num_cpus": os.cpu_count() if cuda else 2}
if os.environ["DATA_DIR"]:
    overrides.update({"data.data_dir": os.environ["DATA_DIR"], "data.download": False})
else:  # generated images of CIFAR-10's shape (the paper's split sizes on a GPU)
    n = 50000 if cuda else 600
    overrides.update({"data.source": "synthetic", "data.synthetic_train": n, "data.synthetic_test": 1000,
                      "data.train_size": n * 9 // 10, "data.valid_size": n // 10})
if not cuda:  # CPU: the same search, small enough for two cores
    overrides.update({"space.params": {"num_layers": 4}, "supernet.channels": 8, "data.batch_size": 32,
                      "data.eval_batch_size": 60, "weight_sharing.archs_per_epoch": 40})
summary = run_search(load_config("configs/enas-macro.yaml", overrides))
with (Path(out) / "metrics.csv").open() as f:
    rows = list(csv.DictReader(f))
print(f"{'epoch':>5}{'supernet s':>12}{'sampling s':>12}{'evaluation s':>14}{'update s':>10}{'derive s':>10}"
      f"{'shared acc':>12}")
for r in rows:
    derive = f"{float(r['derive_s']):.1f}" if r["derive_s"] else "-"
    print(f"{r['epoch']:>5}{float(r['supernet_s']):>12.1f}{float(r['sampling_s']):>12.1f}"
          f"{float(r['evaluation_s']):>14.1f}{float(r['update_s']):>10.1f}{derive:>10}"
          f"{float(r['shared_accuracy']):>12.3f}")
best = json.loads((Path(out) / "best_arch.json").read_text())
print(f"derived {best['arch']}: {best['valid_accuracy']:.3f} on the validation split "
      f"({summary['evaluated']} children scored; outputs in {out})")
EOF
