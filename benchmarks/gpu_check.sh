#!/bin/bash
# The device check of the sampler on one GPU, in ~5 minutes: what docs/performance.md owes.
#
# Runs benchmarks/sampler.py --device cuda at fp32 and at bf16 (production default vs the 20-step
# teacher, side by side: galaxies/s, their ratio, FLOP/galaxy, efficiency vs GEMM, peak GPU
# memory, chunk size from free memory), samples a fixed set of held-out mock objects with
# true redshifts at both precisions (CRPS, sigma_NMAD, PIT KS: the numbers that decide
# bf16), samples GPU utilisation with nvidia-smi, and tries torch.compile last.
#
# Needs python3 with torch, numpy and safetensors only (PYTHONPATH=., no install, no network).
# The model and the quality set travel with the working tree:
#   MODEL    model directory with its students (default: the bundled default model)
#   QUALITY  features + truth of the objects (default benchmarks/data/quality_mock_s2.npz; make
#            one with `python benchmarks/sampler.py --model MODEL --write-quality MOCK 5000
#            --quality FILE` where the package is installed)
#   OUT      where the JSON and samples go (default $OUT of the device tool, else gpu_check_out)
# Run:   bash benchmarks/gpu_check.sh
set -uo pipefail

PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-specdiff_catalog/data/default_model}
QUALITY=${QUALITY:-benchmarks/data/quality_mock_s2.npz}
OUT=${OUT:-gpu_check_out}
DEVICE=${DEVICE:-cuda}                # DEVICE=cpu with small counts: a dry run of this script anywhere
GALAXIES=${GALAXIES:-300000}          # production default (cheap per galaxy)
TEACHER_GALAXIES=${TEACHER_GALAXIES:-20000}  # 20-step x 100-sample teacher (2,000 evaluations per galaxy)
QUALITY_OBJECTS=${QUALITY_OBJECTS:-5000}     # of the quality set (all 4,988 by default)
export PYTHONPATH=.
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$OUT/nvidia_smi.csv" &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

for precision in fp32 bf16; do
    echo "=== sampler, $precision"
    timeout 150 "$PYTHON" benchmarks/sampler.py --device "$DEVICE" --model "$MODEL" --precision "$precision" \
        --galaxies "$GALAXIES" --teacher-galaxies "$TEACHER_GALAXIES" --repeats 2 \
        --quality "$QUALITY" --quality-objects "$QUALITY_OBJECTS" --save-samples "$OUT/samples_$precision.npz" --json "$OUT/sampler_$precision.json"
    echo "rc=$?"
done
kill $SMI 2>/dev/null

echo "=== bf16 against fp32 on the quality set, and GPU utilisation while sampling"
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {p: json.loads((out / f"sampler_{p}.json").read_text()) for p in ("fp32", "bf16") if (out / f"sampler_{p}.json").exists()}
for name in ("production", "teacher"):
    for p, r in runs.items():
        q = r.get(f"quality_{name}", {})
        print(f"{name:>10} {p}: {r[name]['galaxies_per_s']:>12,.0f} galaxies/s, peak "
              f"{(r[name]['peak_gpu_bytes'] or 0) / 2**30:.1f} GiB, efficiency vs GEMM "
              f"{r[name]['efficiency_vs_gemm']:.2f}; CRPS {q.get('crps', float('nan')):.5f} "
              f"sigma_NMAD {q.get('sigma_nmad', float('nan')):.5f} PIT KS {q.get('pit_ks', float('nan')):.4f}")
if len(runs) == 2:
    a, b = runs["fp32"]["quality_production"], runs["bf16"]["quality_production"]
    keeps = b["crps"] <= 1.01 * a["crps"] and b["sigma_nmad"] <= 1.01 * a["sigma_nmad"] and b["pit_ks"] <= a["pit_ks"] + 0.005
    print(f"bf16 keeps the production quality (CRPS and sigma_NMAD within 1%, PIT KS within 0.005 of fp32): {keeps}")
    print(f"bf16 / fp32 production galaxies/s: {runs['bf16']['production']['galaxies_per_s'] / runs['fp32']['production']['galaxies_per_s']:.2f}")
smi = out / "nvidia_smi.csv"
util = [float(line.split(",")[1]) for line in (smi.read_text().splitlines() if smi.exists() else []) if line.count(",") == 2]
busy = [u for u in util if u > 0]
if util:
    print(f"GPU utilisation over {len(util)} samples at 0.5 s: mean {sum(util) / len(util):.0f}%, "
          f"mean while busy {sum(busy) / max(len(busy), 1):.0f}%")
EOF

echo "=== optional: torch.compile (max-autotune-no-cudagraphs), bf16"
timeout 150 "$PYTHON" benchmarks/sampler.py --device "$DEVICE" --model "$MODEL" --precision bf16 \
    --galaxies "$GALAXIES" --teacher-galaxies "$TEACHER_GALAXIES" --repeats 2 \
    --compile max-autotune-no-cudagraphs --json "$OUT/sampler_bf16_compiled.json"
echo "rc=$?"
