#!/bin/bash
# Distil a model's students, train a narrower comparison denoiser (and distil it), measure quality
# against cost on a held-out mock, record the production default, and time the sampler
# (docs/distillation.md, docs/performance.md). Every step's output in WORK is reused on a re-run.
#
#   MODEL   model directory with autoencoder + diffusion (students are written into it)
#   TRAIN   training set with spectra (default: the diffusion training set recorded in MODEL);
#           the narrow denoiser is trained on it, the students read its photometry
#   MOCK    held-out mock survey with truth, another seed (mock --seed 2 --n-spec 2000
#           --n-phot 10000 --n-rest 2000)
#   WORK    where the narrow model goes (default build/quality_cost)
#   OUT     output prefix of the table, JSON and PNG (default docs/img/quality_cost)
#
# Run:    MODEL=... MOCK=... flock /work/locks/cpu bash jobs/quality_cost.sh
# Check:  DRY_RUN=1 MODEL=m MOCK=s bash jobs/quality_cost.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
MODEL=${MODEL:?MODEL: the model directory}
MOCK=${MOCK:?MOCK: the held-out mock survey}
TRAIN=${TRAIN:-}
WORK=${WORK:-build/quality_cost}
OUT=${OUT:-docs/img/quality_cost}
OBJECTS=${OBJECTS:-3000}
SPECTRA=${SPECTRA:-500}
DDPM_OBJECTS=${DDPM_OBJECTS:-150}

run() {
    printf '+ %s\n' "$*"
    [[ -n "${DRY_RUN:-}" ]] || "$@"
}
sdc() { run "$PYTHON" -m specdiff_catalog "$@"; }
has() {  # has DIR SECTION: DIR/config.json has that section
    [[ -z "${DRY_RUN:-}" && -f "$1/config.json" ]] &&
        "$PYTHON" -c "import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1])))" "$1/config.json" "$2"
}
data=(${TRAIN:+--data "$TRAIN"})

has "$MODEL" student || sdc train distill --model "$MODEL" "${data[@]}" --no-progress

NARROW="$WORK/narrow"
if ! has "$NARROW" student; then
    run rm -rf "$NARROW"
    run mkdir -p "$WORK"
    run cp -r "$MODEL" "$NARROW"
    run rm -rf "$NARROW/training" "$NARROW"/student-*.safetensors
    run "$PYTHON" -c "
import json, sys
path = sys.argv[1] + '/config.json'
config = json.load(open(path))
config.pop('student', None)
config['files'] = {k: v for k, v in config['files'].items() if not k.startswith('student-')}
json.dump(config, open(path, 'w'), indent=2, sort_keys=True)
" "$NARROW"
    if [[ -z "$TRAIN" && -z "${DRY_RUN:-}" ]]; then
        TRAIN=$("$PYTHON" -c "import json, sys; print(json.load(open(sys.argv[1]))['diffusion']['training_data']['path'])" "$MODEL/config.json")
    fi
    sdc train diffusion --data "${TRAIN:-TRAIN}" --model "$NARROW" --preset benchmarks/diffusion_narrow.toml --seed 0 --no-progress
    sdc train distill --model "$NARROW" --no-progress
fi

run "$PYTHON" benchmarks/quality_cost.py --model "$MODEL" --extra-model "narrow=$NARROW" --mock "$MOCK" \
    --objects "$OBJECTS" --spectra "$SPECTRA" --ddpm-objects "$DDPM_OBJECTS" --out "$OUT" --set-default
run env PYTHONPATH=. "$PYTHON" benchmarks/sampler.py --device cpu --model "$MODEL" --threads 1 --galaxies 2000 \
    --teacher-galaxies 300 --json "$OUT.sampler_cpu.json"
