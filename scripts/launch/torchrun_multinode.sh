#!/usr/bin/env bash
# Multi-node launch of the course's training script: run this same command on every node.
#
#   NNODES=4 NPROC_PER_NODE=8 RDZV_HOST=node001 bash scripts/launch/torchrun_multinode.sh --strategies fsdp2_zero3
#
# torchrun's c10d rendezvous on RDZV_HOST:RDZV_PORT assigns the ranks; each process then reads
# RANK/WORLD_SIZE/LOCAL_RANK from its environment (course_utils.training.distributed.init_process_group).
# On GPUs the backend is NCCL and each rank takes cuda:LOCAL_RANK; on CPUs (the course's CI) gloo.
# The notebook runs the same script with NNODES=1 NPROC_PER_NODE=2 BACKEND=gloo DEVICE=cpu.
set -euo pipefail
NNODES=${NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-2}
RDZV_HOST=${RDZV_HOST:-127.0.0.1}
RDZV_PORT=${RDZV_PORT:-29500}
BACKEND=${BACKEND:-$( [ "${DEVICE:-cpu}" = cuda ] && echo nccl || echo gloo )}
DEVICE=${DEVICE:-cpu}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m torch.distributed.run \
  --nnodes "$NNODES" --nproc_per_node "$NPROC_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$RDZV_HOST:$RDZV_PORT" --rdzv-id "${RDZV_ID:-llm-course}" \
  "$HERE/scripts/train_distributed.py" --backend "$BACKEND" --device "$DEVICE" "$@"
