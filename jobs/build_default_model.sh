#!/bin/bash
# Rebuild the bundled default model and demo catalog end to end from fixed-seed mock surveys
# (docs/photoz.md "The bundled default model"):
#   mock (seed 1: 20,000 DESI-target spectra + 15,000 deep-field spectra of other catalog galaxies)
#   -> prepare -> train autoencoder (small) -> train diffusion (small) -> train baseline (small)
#   -> train distill (students 4, 2, 1)
#   mock (seed 2: held out) -> a narrower denoiser -> benchmarks/quality_cost.py --set-default
#   (the production setting, docs/distillation.md) -> train coverage (the photometry check's floors)
#   -> specdiff_catalog/data/default_model/ (with the production student only: size)
#   mock (seed 3: 2,000 catalog objects) -> specdiff_catalog/data/demo_catalog/{catalog,truth.parquet}
# Run from the repository root. ~2 h on 2 CPU cores (most of it the autoencoder), minutes on a GPU.
#
# Run:    bash jobs/build_default_model.sh            (WORK=DIR keeps the intermediate files there)
#         AUTOENCODER=DIR bash jobs/build_default_model.sh  starts the model from DIR's trained
#         autoencoder (its weights and training record) instead of training one
# Check:  DRY_RUN=1 bash jobs/build_default_model.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
WORK=${WORK:-build/default_model}          # mock surveys, training set, full model directory with checkpoints
DATA=${DATA:-specdiff_catalog/data}
SEED=${SEED:-1}                            # the training survey
HELD_OUT_SEED=${HELD_OUT_SEED:-2}          # the quality-vs-cost survey: never trained on
DEMO_SEED=${DEMO_SEED:-3}                  # the demo catalog: another seed, so no object is shared
N_DEEP=${N_DEEP:-15000}                    # deep-field spectra: the training set covers the catalog (docs/photoz.md)
AUTOENCODER=${AUTOENCODER:-}               # a model directory whose autoencoder to start from
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
    sdc mock --out "$WORK/mock" --n-spec 20000 --n-deep "$N_DEEP" --n-phot 2000 --seed "$SEED" --n-rest 0 --overwrite
[[ -n "${DRY_RUN:-}" || ! -f "$WORK/train/trainset.json" ]] &&
    sdc prepare --desi "$WORK/mock/spectra" --out "$WORK/train" --overwrite
if [[ -n "$AUTOENCODER" ]] && ! has autoencoder; then
    run "$PYTHON" -c "
import shutil, sys
from pathlib import Path
from specdiff_catalog.models import store
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
config = store.read_config(src)
if config.autoencoder is None:
    sys.exit(f'{src}: no trained autoencoder')
dst.mkdir(parents=True, exist_ok=True)
shutil.copyfile(src / config.autoencoder.weights.file, dst / config.autoencoder.weights.file)
store.write_config(dst, store.ModelConfig(bands=config.bands, autoencoder=config.autoencoder))
" "$AUTOENCODER" "$MODEL"
fi
has autoencoder ||
    sdc train autoencoder --data "$WORK/train" --model "$MODEL" --preset small --seed 0 --device "$DEVICE" --no-progress
has diffusion ||
    sdc train diffusion --data "$WORK/train" --model "$MODEL" --preset small --seed 0 --device "$DEVICE" --no-progress
has baseline ||
    sdc train baseline --data "$WORK/train" --model "$MODEL" --preset small --seed 0
has student ||
    sdc train distill --model "$MODEL" --device "$DEVICE" --no-progress
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
        'DESI-format spectra of bagpipes stellar-population galaxies (BC03 + Cloudy nebular '
        'emission, dust, varied star-formation histories) at 0 < z <= 1.6 selected by the DESI '
        'BGS Bright, LRG and ELG target cuts, with Legacy Surveys g,r,z,W1,W2 photometry at DR10 '
        'depths (docs/mock.md), and ' + sys.argv[3] + ' deep-field spectra of catalog galaxies '
        'outside those targets (4,000 s)',
        command='specdiff-catalog mock --n-spec 20000 --n-deep ' + sys.argv[3]
        + ' --n-phot 2000 --n-rest 0 --seed ' + sys.argv[2],
        script='jobs/build_default_model.sh')))
" "$MODEL" "$SEED" "$N_DEEP"
# the production setting: the cheapest sampler setting within the quality rule, measured on a
# held-out survey against the 20-step teacher and a narrower denoiser (docs/distillation.md)
[[ -n "${DRY_RUN:-}" || ! -f "$WORK/held_out/mock.json" ]] &&
    sdc mock --out "$WORK/held_out" --n-spec 3000 --n-phot 20000 --seed "$HELD_OUT_SEED" --n-rest 500 --overwrite
NARROW="$WORK/narrow"
if [[ -n "${DRY_RUN:-}" || ! -f "$NARROW/diffusion.safetensors" ]]; then
    run rm -rf "$NARROW"
    run cp -r "$MODEL" "$NARROW"  # the same autoencoder; its new diffusion network drops the students
    run rm -rf "$NARROW/training" "$NARROW"/student-*.safetensors
    sdc train diffusion --data "$WORK/train" --model "$NARROW" --preset benchmarks/diffusion_narrow.toml \
        --seed 0 --no-progress
fi
run "$PYTHON" benchmarks/quality_cost.py --model "$MODEL" --extra-model "narrow=$NARROW" --mock "$WORK/held_out" \
    --objects 1500 --spectra 300 --ddpm-objects 60 --out "$WORK/quality_cost" --set-default
# the photometry check's floors again, now from the production setting's draws (train diffusion
# calibrated them on the teacher's, before there were students; docs/coverage.md)
sdc train coverage --model "$MODEL" --data "$WORK/train"
# the package keeps config.json and the weights (the production student, or the 4-evaluation
# one when the teacher is the production setting), not the checkpoints or the latent cache;
# config.json records the work directory as build/default_model, not this machine's path
run "$PYTHON" -c "
import dataclasses, os, shutil, sys
from pathlib import Path
from specdiff_catalog.models import store
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
config = store.read_config(src)
if config.student is not None:
    default = config.student.default
    keep = default.evaluations if default.sampler == 'student' else max(config.student.samplers)
    config = dataclasses.replace(config, student=dataclasses.replace(
        config.student, samplers={keep: config.student.samplers[keep]}))
shutil.rmtree(dst, ignore_errors=True)
dst.mkdir(parents=True)
for weights in config.weight_files():
    shutil.copyfile(src / weights.file, dst / weights.file)
store.write_config(dst, config)
text = (dst / 'config.json').read_text().replace(os.path.abspath(sys.argv[3]), 'build/default_model')
(dst / 'config.json').write_text(text)
" "$MODEL" "$DATA/default_model" "$WORK"

sdc mock --out "$WORK/demo" --n-spec 1 --n-phot 2000 --seed "$DEMO_SEED" --n-rest 0 --order 3 --overwrite
run rm -rf "$DATA/demo_catalog"
run mkdir -p "$DATA/demo_catalog"
run cp -r "$WORK/demo/catalog" "$DATA/demo_catalog/catalog"
run cp "$WORK/demo/truth/photometric.parquet" "$DATA/demo_catalog/truth.parquet"
run du -sh "$DATA/default_model" "$DATA/demo_catalog"
