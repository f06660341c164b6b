#!/usr/bin/env bash
# What moves the transfer result on Fashion-MNIST (the README's "What we measured" table). Runs the
# quickstart first, then, against the same random-init baselines:
#   pretext variants  mask kind (rect, centre, region), adversarial vs reconstruction only
#   protocol          fine-tuning and linear probe
#   label budget      10 and 100 labelled images per class
# 3 seeds each. About an hour on 2 CPU cores; finished runs are reused when it is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/quickstart.sh
DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
RUN=${RUN_DIR:-runs}
OUT=$RUN/study
SSL=.venv/bin/ssl
PRE=recipes/pretrain_fashion_mnist.yaml
FT=recipes/finetune_fashion_mnist_10_per_class.yaml

pretrain() {  # name, extra flags...
  local name=$1; shift
  [ -f "$OUT/$name/encoder.pt" ] || $SSL pretrain --recipe $PRE --data "$DATA" --output-dir "$OUT" --name "$name" "$@"
}
finetune() {  # prefix, init, pretrain run folder, extra flags...
  local prefix=$1 init=$2 ckpt=$3; shift 3
  for seed in 0 1 2; do
    [ -f "$OUT/ft/${prefix}_${init}_s${seed}/metrics.json" ] || $SSL finetune --recipe $FT --data "$DATA" \
      --init "$init" --checkpoint "$ckpt" --seeds "$seed" --output-dir "$OUT/ft" --name "$prefix" "$@"
  done
}

pretrain rect_reconstruction --no-global-d                 # the quickstart pretext, reconstruction loss only
pretrain centre_adversarial --mask centre --centre-size 0.5
pretrain region_adversarial --mask region

for variant in rect_reconstruction centre_adversarial region_adversarial; do
  finetune "ft10_$variant" pretrained "$OUT/$variant"
done
LINEAR=(--mode linear --features pooled --epochs 100 --lr 0.1 --weight-decay 0 --eval-every 100)
for ckpt in "$RUN/quickstart_pretrain" "$OUT/rect_reconstruction" "$OUT/centre_adversarial" "$OUT/region_adversarial"; do
  finetune "lin10_$(basename "$ckpt")" pretrained "$ckpt" "${LINEAR[@]}"
done
finetune lin10 random "$RUN/quickstart_pretrain" "${LINEAR[@]}"
for init in pretrained random; do
  finetune lin100 "$init" "$RUN/quickstart_pretrain" "${LINEAR[@]}" --labels-per-class 100
  finetune ft100 "$init" "$RUN/quickstart_pretrain" --labels-per-class 100 --epochs 10
done
$SSL compare "$RUN/quickstart" "$OUT/ft" --output "$OUT/compare.md" --logdir "$OUT/compare"
