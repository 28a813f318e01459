#!/bin/bash
# Rebuild the bundled default model and demo catalog end to end from fixed-seed mock surveys
# (docs/photoz.md "The bundled default model"):
#   mock (seed 1: 24,000 spectra) -> prepare -> train autoencoder (small) -> train diffusion
#   (small) -> train baseline (small) -> specdiff_catalog/data/default_model/
#   mock (seed 3: 2,000 catalog objects) -> specdiff_catalog/data/demo_catalog/{catalog,truth.parquet}
# Run from the repository root. ~1 h on 2 CPU cores (most of it the autoencoder), minutes on a GPU.
#
# Run:    bash jobs/build_default_model.sh            (WORK=DIR keeps the intermediate files there)
# Check:  DRY_RUN=1 bash jobs/build_default_model.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
WORK=${WORK:-build/default_model}          # mock surveys, training set, full model directory with checkpoints
DATA=${DATA:-specdiff_catalog/data}
SEED=${SEED:-1}                            # the training survey
DEMO_SEED=${DEMO_SEED:-3}                  # the demo catalog: another seed, so no object is shared
DEVICE=${DEVICE:-auto}

run() {
    printf '+ %s\n' "$*"
    [[ -n "${DRY_RUN:-}" ]] || "$@"
}
sdc() { run "$PYTHON" -m specdiff_catalog "$@"; }

# Steps whose output exists in WORK are not redone (re-running after an interruption, or a
# WORK pre-filled with the same mock / training set / trained components, picks up there).
MODEL="$WORK/model"
has() {  # has COMPONENT: MODEL/config.json has that section
    [[ -z "${DRY_RUN:-}" && -f "$MODEL/config.json" ]] &&
        "$PYTHON" -c "import sys; from specdiff_catalog.models.store import read_config
sys.exit(getattr(read_config(sys.argv[1]), sys.argv[2]) is None)" "$MODEL" "$1"
}
[[ -n "${DRY_RUN:-}" || ! -f "$WORK/mock/mock.json" ]] &&
    sdc mock --out "$WORK/mock" --n-spec 24000 --n-phot 20000 --seed "$SEED" --overwrite
[[ -n "${DRY_RUN:-}" || ! -f "$WORK/train/trainset.json" ]] &&
    sdc prepare --desi "$WORK/mock/spectra" --out "$WORK/train" --overwrite
has autoencoder ||
    sdc train autoencoder --data "$WORK/train" --model "$MODEL" --preset small --seed 0 --device "$DEVICE" --no-progress
has diffusion ||
    sdc train diffusion --data "$WORK/train" --model "$MODEL" --preset small --seed 0 --device "$DEVICE" --no-progress
has baseline ||
    sdc train baseline --data "$WORK/train" --model "$MODEL" --preset small --seed 0
# what the model was trained on, and that it is simulated (printed wherever it is used)
run "$PYTHON" -c "
import dataclasses, sys
from specdiff_catalog.models import store
config = store.read_config(sys.argv[1])
store.write_config(sys.argv[1], dataclasses.replace(
    config,
    provenance=store.Provenance(simulated=True),
    training_data=dataclasses.replace(
        config.training_data,
        description='specdiff-catalog mock survey (simulated galaxies), seed ' + sys.argv[2] + ': '
        'DESI-format spectra of SkyPy galaxies at 0 < z <= 0.8, r < 22.5, with Legacy Surveys '
        'g,r,z,W1,W2 photometry at DR10 depths (docs/mock.md)',
        command='specdiff-catalog mock --n-spec 24000 --n-phot 20000 --seed ' + sys.argv[2],
        script='jobs/build_default_model.sh')))
" "$MODEL" "$SEED"
# the package keeps config.json and the weights, not the checkpoints or the latent cache
run rm -rf "$DATA/default_model"
run mkdir -p "$DATA/default_model"
run cp "$MODEL/config.json" "$MODEL/autoencoder.safetensors" "$MODEL/diffusion.safetensors" "$MODEL/baseline.cbm" \
    "$MODEL/coverage.safetensors" "$DATA/default_model/"

sdc mock --out "$WORK/demo" --n-spec 1 --n-phot 2000 --seed "$DEMO_SEED" --n-rest 0 --order 3 --overwrite
run rm -rf "$DATA/demo_catalog"
run mkdir -p "$DATA/demo_catalog"
run cp -r "$WORK/demo/catalog" "$DATA/demo_catalog/catalog"
run cp "$WORK/demo/truth/photometric.parquet" "$DATA/demo_catalog/truth.parquet"
run du -sh "$DATA/default_model" "$DATA/demo_catalog"
