#!/usr/bin/env bash
# F1 per `inner`: every position-attention mechanism fine-tuned on the same trained trunk.
# Trunk: TRUNK (a tamper checkpoint). Each run re-initialises the attention's weights
# (--init-skip below), starts its residual gate at gamma = 1 (so every mechanism is in use
# from the first step: with DANet's gamma = 0 start, 300 steps leave gamma near 0 and the
# attention off), trains 1 epoch of DATA with the same seed and schedule, and is scored
# on the synthetic val split (during training) and on the CASIA v1 samples.
# Usage: docs/tamper/inner-f1/run.sh TRUNK DATA OUT [INNER ...]
set -euo pipefail
trunk=$1 data=$2 out=$3
shift 3
inners=("$@")
if [ ${#inners[@]} -eq 0 ]; then
  inners=(none acmix axial castling deformable grid hilo linear mhsa nystrom sra window)
fi
casia=${CASIA:-../shared/data/tamper/casia1-samples}
mkdir -p "$out"
start_from="$out/trunk-gamma1.safetensors"
python - "$trunk" "$start_from" <<'PY'
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

with safe_open(sys.argv[1], "pt") as f:
    meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
state["position.gamma"] = torch.ones_like(state["position.gamma"])
save_file(state, sys.argv[2], metadata=meta)
PY
for inner in "${inners[@]}"; do
  run="$out/$inner"
  if [ -f "$run/casia/eval.json" ]; then continue; fi
  rm -rf "$run"
  start=$(date +%s)
  lightattn tamper train --data "$data" --out "$run" --variant stdc1 --width 0.5 \
    --inner "$inner" --init "$start_from" --init-skip position.inner. \
    --init-skip position.query. --init-skip position.key. --init-skip position.value. \
    --img-size 256 --epochs 1 --batch-size 8 --lr 5e-4 --warmup-epochs 0.1 --seed 0 \
    --threads 1 --no-progress > "$run.log" 2>&1
  lightattn tamper eval --data "$casia" --checkpoint "$run/final.safetensors" \
    --out "$run/casia" --threads 1 > /dev/null 2>&1
  echo "$inner $(( $(date +%s) - start )) s" >> "$out/times.txt"
done
