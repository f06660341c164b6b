#!/usr/bin/env bash
# Launch any ssl command under torchrun, on one machine or as one node of several.
#
#   NPROC=8 bash recipes/launch_torchrun.sh pretrain --recipe recipes/pretrain_coco_m1.yaml --data /data/coco
#   # node k of N (run the same line on every node; the c10d rendezvous assigns ranks):
#   NNODES=2 NPROC=8 RDZV_ENDPOINT=head-node:29500 RDZV_ID=job42 bash recipes/launch_torchrun.sh pretrain ...
#
# NPROC: processes on this node (default: its GPU count, or 1); NNODES: nodes (default 1);
# RDZV_ENDPOINT: host:port every node can reach (default 127.0.0.1:29500); RDZV_ID: a job id shared by the
# nodes; PYTHON: the interpreter with ssl_inpaint installed (default: .venv/bin/python if present).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
NPROC=${NPROC:-$(( GPUS > 0 ? GPUS : 1 ))}
exec "$PYTHON" -m torch.distributed.run \
  --nnodes "${NNODES:-1}" --nproc-per-node "$NPROC" \
  --rdzv-backend c10d --rdzv-endpoint "${RDZV_ENDPOINT:-127.0.0.1:29500}" --rdzv-id "${RDZV_ID:-ssl_inpaint}" \
  -m ssl_inpaint "$@"
