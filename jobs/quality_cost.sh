#!/bin/bash
# Distil a model's students, train a narrower comparison denoiser (and distil it), measure quality
# against cost on a held-out mock, record the production default, time the sampler, and write the
# held-out quality set the GPU check uses (docs/distillation.md, docs/performance.md). Every
# step whose output is already there is skipped on a re-run.
#
#   MODEL   model directory with autoencoder + diffusion (the students are written into it)
#   TRAIN   training set made by `prepare` (default: the diffusion training set MODEL records);
#           the narrow denoiser is trained on it, the students read its photometry
#   MOCK    held-out mock survey made by `specdiff-catalog mock` with another seed than the
#           training data's (MOCK/catalog: photometric HATS catalog, MOCK/truth: truth,
#           MOCK/spectra: DESI-format files), e.g. mock --seed 2 --n-spec 2000 --n-phot 10000
#   WORK    where the narrow model and the quality set go (default build/quality_cost)
#   OUT     output prefix of the table, JSON and PNG (default docs/img/quality_cost)
#   OBJECTS, SPECTRA, DDPM_OBJECTS, QUALITY_OBJECTS, STUDENTS, EPOCHS: sizes (defaults below);
#           EPOCHS overrides the presets' epochs of every training step (a quick dry run)
#   LOCK    the lock file each heavy step holds (default /work/locks/cpu; empty: none)
#
# Run:    MODEL=... TRAIN=... MOCK=... bash jobs/quality_cost.sh   (each step takes the CPU lock)
# Check:  DRY_RUN=1 MODEL=m MOCK=s bash jobs/quality_cost.sh       (prints the commands only)
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
QUALITY_OBJECTS=${QUALITY_OBJECTS:-5000}
STUDENTS=${STUDENTS:-4 2 1}  # network evaluations of the students, one `train distill` each
LOCK=${LOCK-/work/locks/cpu}  # LOCK= (empty) runs without flock

run() {
    printf '+ %s\n' "$*"
    [[ -n "${DRY_RUN:-}" ]] || "$@"
}
locked() { if [[ -n "$LOCK" ]]; then run flock "$LOCK" "$@"; else run "$@"; fi; }
sdc() { locked "$PYTHON" -m specdiff_catalog "$@"; }
has_student() {  # has_student DIR N: DIR's config.json has the N-evaluation student
    [[ -z "${DRY_RUN:-}" && -f "$1/config.json" ]] &&
        "$PYTHON" -c "import sys; from specdiff_catalog.models.store import read_config
student = read_config(sys.argv[1]).student
sys.exit(student is None or int(sys.argv[2]) not in student.samplers)" "$1" "$2"
}
distil() {  # distil DIR: its students one call (one lock hold) each; the first builds the bank
    for n in $STUDENTS; do
        has_student "$1" "$n" ||
            sdc train distill --model "$1" --data "$TRAIN" --evaluations "$n" "${epochs[@]}" --no-progress
    done
}
epochs=(${EPOCHS:+--epochs "$EPOCHS"})
if [[ -z "$TRAIN" && -z "${DRY_RUN:-}" ]]; then
    TRAIN=$("$PYTHON" -c "import sys; from specdiff_catalog.models.store import read_config
print(read_config(sys.argv[1]).diffusion.training.data)" "$MODEL")
fi
TRAIN=${TRAIN:-TRAIN}

distil "$MODEL"

NARROW="$WORK/narrow"
if [[ ! -f "$WORK/narrow.trained" ]]; then
    run rm -rf "$NARROW"
    run mkdir -p "$WORK"
    run cp -r "$MODEL" "$NARROW"
    run rm -rf "$NARROW/training" "$NARROW"/student-*.safetensors
    # a new diffusion network drops the copied student section (its teacher is gone)
    sdc train diffusion --data "$TRAIN" --model "$NARROW" --preset benchmarks/diffusion_narrow.toml \
        --seed 0 "${epochs[@]}" --no-progress
    run touch "$WORK/narrow.trained"
fi
distil "$NARROW"

locked "$PYTHON" benchmarks/quality_cost.py --model "$MODEL" --extra-model "narrow=$NARROW" --mock "$MOCK" \
    --objects "$OBJECTS" --spectra "$SPECTRA" --ddpm-objects "$DDPM_OBJECTS" --out "$OUT" --set-default
run "$PYTHON" benchmarks/sampler.py --model "$MODEL" --write-quality "$MOCK" "$QUALITY_OBJECTS" \
    --quality "$WORK/quality_mock.npz"
locked env PYTHONPATH=. "$PYTHON" benchmarks/sampler.py --device cpu --model "$MODEL" --threads 1 \
    --galaxies 2000 --teacher-galaxies 300 --quality "$WORK/quality_mock.npz" --quality-objects 1000 \
    --json "$OUT.sampler_cpu.json"
