#!/usr/bin/env bash
# Zero-shot risk vs M (with the A/M + B fit) and the OOD sweep with misspecified BP, from one
# CLIP run trained at p = 0.2. CPU: the default preset; GPU: PRESET=paper DEVICE=cuda.
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESET=${PRESET:-default}
DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/ghm-zs-ood}
[ -f "$OUT/clip/summary.json" ] || uv run apps/ghm/train.py --preset "$PRESET" --device "$DEVICE" --p 0.2 --out "$OUT/clip" --resume
uv run apps/ghm/eval.py --preset "$PRESET" --device "$DEVICE" --run "$OUT/clip" --zero-shot --ood \
    --m-values 5,10,25,50,100,250 --p-values 0.02,0.1,0.2,0.3,0.4 --out "$OUT/eval"
echo "plots: $OUT/eval/zero_shot_vs_m.png $OUT/eval/ood_excess_risk.png"
