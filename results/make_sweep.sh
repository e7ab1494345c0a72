#!/usr/bin/env bash
# Regenerates results/sweep-cpu/: a design-space sweep of resnet_family.yaml at two budgets on this 2-core CPU,
# its analysis (HTML, PNGs, analysis.json, refined_space.yaml), then pycls's refinement test: a second sweep of
# random samples from the refined space, compared with the original's by benchmarks/refinement_test.py.
#   bash results/make_sweep.sh          (about 50 minutes; rerunning resumes both sweeps)
set -euo pipefail
cd "$(dirname "$0")/.."
make install data >/dev/null
R=.venv/bin/resnas
OUT=results/sweep-cpu
mkdir -p "$OUT"
PER_BUDGET_S=${PER_BUDGET_S:-840}   # ~30 minutes for the original sweep's two budgets
# --samples is a ceiling: --timeout (per budget) decides how many the machine trains.
start=$(date +%s)
$R sweep --space search_spaces/resnet_family.yaml --budget 1G,4G --samples 400 --timeout "$PER_BUDGET_S" \
  --out "$OUT/original" | grep -v "^[┃│┏┡└]" > "$OUT/original.log"
original_s=$(( $(date +%s) - start ))
$R analyze "$OUT/original" --refine --out "$OUT/analysis" | tee "$OUT/analysis.txt"
start=$(date +%s)
$R sweep --space "$OUT/analysis/refined_space.yaml" --budget 1G,4G --samples 400 \
  --timeout "$(( PER_BUDGET_S / 2 ))" --out "$OUT/refined" | grep -v "^[┃│┏┡└]" > "$OUT/refined.log"
refined_s=$(( $(date +%s) - start ))
.venv/bin/python benchmarks/refinement_test.py "$OUT/original" "$OUT/refined" | tee "$OUT/refinement_test.txt"
echo "original sweep ${original_s}s, refined sweep ${refined_s}s (wall, this machine)" | tee -a "$OUT/refinement_test.txt"
