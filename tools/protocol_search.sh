#!/usr/bin/env bash
# The transfer protocol search of issue 11, with the same budget for both inits: every protocol of
# the grid trains on the quickstart's pretrained encoder and on the same architecture from random
# init, with the same 10 labelled images per class and 3 seeds each, and ssl compare prints one row
# per protocol (the pretrained and random runs of a row share every setting). Fine-tuning protocols
# go to runs/protocols, linear-probe ones to runs/linprotocols. Needs the quickstart's pretext
# (bash tools/quickstart.sh). About 25 minutes on 2 CPU cores; finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/study_env.sh
source tools/study_lib.sh
PRE=${PRETRAIN_RUN:-$RUN/quickstart_pretrain}
[ -f "$PRE/encoder.pt" ] || { echo "error: $PRE/encoder.pt not found: run bash tools/quickstart.sh first" >&2; exit 2; }

protocol() {  # output folder, recipe, name, flags on top of the recipe...
  local out=$1 recipe=$2 name=$3; shift 3
  finetune_inits "$out" "$name" "$recipe" "$PRE" 0,1,2 "pretrained random" --data "$DATA" "$@"
}

# Fine-tuning: one change at a time from a base protocol (the recipe less its layer decay and
# BatchNorm re-estimation: SGD 0.01 constant, 30 epochs, latent features, crop + flip), then
# combinations of the changes that helped either init. The recipe took the protocol the random
# init did best with.
FT="$RUN/protocols recipes/finetune_fashion_mnist_10_per_class.yaml"
BASE="--layer-decay 1 --bn-stats running"
protocol $FT base $BASE
protocol $FT head_warmup $BASE --head-warmup-epochs 10
protocol $FT pad_crop $BASE --augment pad_crop,flip
protocol $FT layer_decay $BASE --layer-decay 0.75
protocol $FT bn_clean $BASE --bn-stats clean
protocol $FT cosine $BASE --lr-schedule cosine
protocol $FT features_pooled $BASE --features pooled
protocol $FT decay_bnclean $BASE --layer-decay 0.75 --bn-stats clean
protocol $FT warmup_decay $BASE --head-warmup-epochs 10 --layer-decay 0.75
protocol $FT warmup_decay_bnclean $BASE --head-warmup-epochs 10 --layer-decay 0.75 --bn-stats clean
$SSL compare "$RUN/protocols" --output "$RUN/protocols/compare.md" --logdir "$RUN/protocols/compare"

# Linear probe: features, BatchNorm statistics, regularisation, length.
LIN="$RUN/linprotocols recipes/linear_fashion_mnist_10_per_class.yaml"
protocol $LIN recipe
protocol $LIN latent --features latent
protocol $LIN multi --features multi
protocol $LIN wd_1e-3 --weight-decay 1e-3
protocol $LIN wd_1e-2 --weight-decay 1e-2
protocol $LIN wd_1e-1 --weight-decay 1e-1
protocol $LIN bn_clean --bn-stats clean
protocol $LIN epochs_20 --epochs 20 --eval-every 20
$SSL compare "$RUN/linprotocols" --output "$RUN/linprotocols/compare.md" --logdir "$RUN/linprotocols/compare"
