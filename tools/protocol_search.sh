#!/usr/bin/env bash
# The transfer protocol search of issue 11, with the same budget for both inits: every protocol of
# the grid fine-tunes the quickstart's pretrained encoder and the same architecture from random
# init on the same 10 labelled images per class, 3 seeds each, and ssl compare prints one row per
# protocol (the pretrained and random runs of a row share every setting). Needs the quickstart's
# pretext (bash tools/quickstart.sh). About 15 minutes on 2 CPU cores; finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
RUN=${RUN_DIR:-runs}
OUT=$RUN/protocols
SSL=.venv/bin/ssl
FT=recipes/finetune_fashion_mnist_10_per_class.yaml
PRE=${PRETRAIN_RUN:-$RUN/quickstart_pretrain}
[ -f "$PRE/encoder.pt" ] || { echo "error: $PRE/encoder.pt not found: run bash tools/quickstart.sh first" >&2; exit 2; }

protocol() {  # name, flags on top of the fine-tuning recipe...
  local name=$1; shift
  for init in pretrained random; do
    [ -f "$OUT/${name}_${init}_s2/metrics.json" ] || $SSL finetune --recipe $FT --data "$DATA" --init "$init" \
      --checkpoint "$PRE" --seeds 0,1,2 --output-dir "$OUT" --name "$name" "$@"
  done
}

# One change at a time from the recipe, then the combinations.
protocol recipe
protocol features_latent --features latent
protocol features_multi --features multi
protocol constant_lr --lr-schedule constant
protocol head_warmup --head-warmup-epochs 10
protocol pad_crop --augment pad_crop,flip
protocol erase --augment crop,flip,erase
protocol layer_decay --layer-decay 0.75
protocol bn_clean --bn-stats clean
protocol lr_003 --lr 0.03
protocol epochs_60 --epochs 60 --eval-every 60

$SSL compare "$OUT" --output "$OUT/compare.md" --logdir "$OUT/compare"
