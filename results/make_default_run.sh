#!/usr/bin/env bash
# Regenerates results/default-cpu/: the README's default search, run on this machine, with its wall time.
#   bash results/make_default_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make install data >/dev/null
OUT=results/default-cpu
rm -rf "$OUT"
mkdir -p "$OUT"
CMD=(.venv/bin/resnas search --space search_spaces/resnet_family.yaml --budget 4GFLOPs --verify --out "$OUT")
start=$(date +%s)
"${CMD[@]}" | tee "$OUT/search.log"
wall=$(( $(date +%s) - start ))
best_arch=$(cat "$OUT/best/arch.json")
best_trial=$(cat "$OUT/best/trial.json")
cat > "$OUT/README.md" <<MD
# Default search on a CPU machine

Command (the README's main job, with \`--out\` added so the run lands here):

    resnas search --space search_spaces/resnet_family.yaml --budget 4GFLOPs --verify --out $OUT

Regenerate with \`bash results/make_default_run.sh\`.

- Machine: $(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, no GPU
- Software: Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'), optuna $(.venv/bin/python -c 'import optuna; print(optuna.__version__)')
- Wall time: ${wall} s for the whole command (data loading, screening, training, reports)
- Log: [search.log](search.log); every trial: [trials.csv](trials.csv); plot: [accuracy_vs_flops.png](accuracy_vs_flops.png)
- Verification (chosen on the selection split, the chosen scored on the test split): [verify/verify.csv](verify/verify.csv), [verify/summary.json](verify/summary.json) (the pick, the verdict, one line per classic, test accuracies), [verify/verify.png](verify/verify.png)

## Best trial

\`\`\`json
$best_trial
\`\`\`

## Best architecture (searched, full width; budget checked on this)

\`\`\`json
$best_arch
\`\`\`

Weights (\`best/weights.pt\`, \`weights/\`, \`verify/weights/\`) and the study database are not committed: rerun the script to get them.
MD
echo "wrote $OUT/README.md (wall time ${wall}s)"
