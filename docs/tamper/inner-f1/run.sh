#!/usr/bin/env bash
# F1 per `inner`: every position-attention mechanism fine-tuned on the same trained trunk.
# Trunk: TRUNK (a tamper checkpoint); each run re-initialises the whole position module
# (--init-skip position.), trains 1 epoch of DATA with the same seed and schedule, then is
# scored on the synthetic val split (during training) and on the CASIA v1 samples.
# Usage: docs/tamper/inner-f1/run.sh TRUNK DATA OUT [INNER ...]
set -euo pipefail
trunk=$1 data=$2 out=$3
shift 3
inners=("$@")
if [ ${#inners[@]} -eq 0 ]; then
  inners=(none acmix axial castling deformable grid hilo linear mhsa nystrom sra window)
fi
casia=${CASIA:-../shared/data/tamper/casia1-samples}
for inner in "${inners[@]}"; do
  run="$out/$inner"
  if [ -f "$run/casia/eval.json" ]; then continue; fi
  start=$(date +%s)
  lightattn tamper train --data "$data" --out "$run" --variant stdc1 --width 0.5 \
    --inner "$inner" --init "$trunk" --init-skip position. --img-size 256 --epochs 1 \
    --batch-size 8 --lr 5e-4 --warmup-epochs 0.1 --seed 0 --threads 1 --no-progress \
    > "$run.log" 2>&1
  lightattn tamper eval --data "$casia" --checkpoint "$run/final.safetensors" \
    --out "$run/casia" --threads 1 > /dev/null 2>&1
  echo "$inner $(( $(date +%s) - start )) s" >> "$out/times.txt"
done
