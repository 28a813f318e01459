#!/bin/bash
# specdiff-catalog run from a login node with dask-jobqueue: the client and scheduler
# run here, and each worker is its own SLURM job (docs/hpc.md). Needs the [hpc] extra.
#
# Run:    INPUT=/data/ls_dr10 OUT=/scratch/$USER/pz.zarr QUEUE=gpu ACCOUNT=myproj bash jobs/run_catalog_jobqueue.sh
# Check:  DRY_RUN=1 INPUT=ls_dr10 OUT=pz.zarr bash jobs/run_catalog_jobqueue.sh
set -euo pipefail

: "${INPUT:?set INPUT to the HATS catalog}"
: "${OUT:?set OUT to the output Zarr store}"
QUEUE=${QUEUE:-gpu}
ACCOUNT=${ACCOUNT:-}
JOBS=${JOBS:-8}             # worker jobs
GPUS=${GPUS:-1}             # GPUs per worker job (0 for CPU workers)
CORES=${CORES:-16}
MEMORY=${MEMORY:-64GiB}
WALLTIME=${WALLTIME:-04:00:00}
SCRATCH=${SCRATCH:-/tmp}    # node-local scratch for worker spill files

cmd=(specdiff-catalog run --input "$INPUT" --out "$OUT" --cluster slurm
     --slurm-queue "$QUEUE" --slurm-jobs "$JOBS" --slurm-gpus "$GPUS" --slurm-cores "$CORES"
     --slurm-memory "$MEMORY" --slurm-walltime "$WALLTIME" --slurm-local-directory "$SCRATCH")
[[ -n "$ACCOUNT" ]] && cmd+=(--slurm-account "$ACCOUNT")
[[ -n "${MODEL:-}" ]] && cmd+=(--model "$MODEL")

if [[ -n "${DRY_RUN:-}" ]]; then printf '+ %s\n' "${cmd[*]}"; else exec "${cmd[@]}"; fi
