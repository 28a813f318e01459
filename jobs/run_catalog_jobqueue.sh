#!/bin/bash
# specdiff-catalog run from a login node with dask-jobqueue: the client and scheduler
# run here, and each worker is its own SLURM job (docs/hpc.md). Needs the [hpc] extra.
# Options left unset here come from your ~/.config/dask/jobqueue.yaml (jobqueue: slurm:),
# never overridden with empty values.
#
# Run:    INPUT=/data/ls_dr10 OUT=/scratch/$USER/pz.zarr QUEUE=gpu ACCOUNT=myproj QOS=regular CONSTRAINT=gpu bash jobs/run_catalog_jobqueue.sh
# Check:  DRY_RUN=1 INPUT=ls_dr10 OUT=pz.zarr bash jobs/run_catalog_jobqueue.sh
set -euo pipefail

: "${INPUT:?set INPUT to the HATS catalog}"
: "${OUT:?set OUT to the output Zarr store}"
JOBS=${JOBS:-8}             # worker jobs
GPUS=${GPUS:-1}             # GPUs per worker job: 1, or 0 for CPU workers

cmd=(specdiff-catalog run --input "$INPUT" --out "$OUT" --cluster slurm --slurm-jobs "$JOBS" --slurm-gpus "$GPUS")
# each of these only when set; otherwise jobqueue.yaml decides
for pair in QUEUE:queue ACCOUNT:account QOS:qos CONSTRAINT:constraint CORES:cores MEMORY:memory \
            WALLTIME:walltime LOCAL_DIR:local-directory; do
    name=${pair%%:*}
    value=${!name:-}
    [[ -n "$value" ]] && cmd+=("--slurm-${pair#*:}" "$value")
done
[[ -n "${MODEL:-}" ]] && cmd+=(--model "$MODEL")

if [[ -n "${DRY_RUN:-}" ]]; then printf '+ %s\n' "${cmd[*]}"; else exec "${cmd[@]}"; fi
