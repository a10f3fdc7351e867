#!/bin/bash
# Multi-node BiomedCLIP training with torchrun under SLURM: 2 nodes x 8 GPUs = the paper's 16 ranks.
# Submit: sbatch configs/slurm_multinode.sh [--key value ...]   (extra args override configs/paper.yaml)
# Resubmitting (or --requeue) continues mid-epoch from OUTPUT/checkpoints/latest (run.resume: auto).
#SBATCH --job-name=biomedclip
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8

srun torchrun \
    --nnodes "$SLURM_NNODES" \
    --nproc-per-node 8 \
    --rdzv-id "$SLURM_JOB_ID" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$HEAD_NODE:29500" \
    -m biomedclip.train --config configs/paper.yaml "$@"
