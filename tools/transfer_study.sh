#!/usr/bin/env bash
# What moves the transfer result on Fashion-MNIST (the README's "What we measured" table):
# pretext variants (mask kind; adversarial vs reconstruction only) x protocol (finetune, linear probe)
# x label budget (10 and 100 per class), 3 seeds each, against one random-init baseline per setting.
# About 40 minutes on 2 CPU cores. Finished runs are reused when it is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
OUT=${RUN_DIR:-runs}/study
SSL=.venv/bin/ssl
PRE=recipes/pretrain_fashion_mnist.yaml
FT=recipes/finetune_fashion_mnist_10_per_class.yaml

pretrain() {  # name, extra flags...
  local name=$1; shift
  [ -f "$OUT/$name/encoder.pt" ] || $SSL pretrain --recipe $PRE --data "$DATA" --output-dir "$OUT" --name "$name" "$@"
}
finetune() {  # prefix, init, checkpoint, extra flags...
  local prefix=$1 init=$2 ckpt=$3; shift 3
  for seed in 0 1 2; do
    [ -f "$OUT/ft/${prefix}_${init}_s${seed}/metrics.json" ] || $SSL finetune --recipe $FT --data "$DATA" \
      --init "$init" --checkpoint "$OUT/$ckpt" --seeds "$seed" --output-dir "$OUT/ft" --name "$prefix" "$@"
  done
}

pretrain rect_adversarial                                  # the quickstart pretext
pretrain rect_reconstruction --no-global-d                 # same, reconstruction loss only
pretrain centre_adversarial --mask centre --centre-size 0.5
pretrain region_adversarial --mask region

LINEAR=(--mode linear --features pooled --epochs 100 --lr 0.1 --weight-decay 0 --eval-every 100)
for variant in rect_adversarial rect_reconstruction centre_adversarial region_adversarial; do
  finetune "ft10_$variant" pretrained "$variant"
  finetune "lin10_$variant" pretrained "$variant" "${LINEAR[@]}"
done
finetune ft10_random random rect_adversarial
finetune lin10_random random rect_adversarial "${LINEAR[@]}"
for init in pretrained random; do
  finetune "lin100_$init" "$init" rect_adversarial "${LINEAR[@]}" --labels-per-class 100
  finetune "ft100_$init" "$init" rect_adversarial --labels-per-class 100 --epochs 10
done
$SSL compare "$OUT/ft" --output "$OUT/compare.md" --logdir "$OUT/compare"
