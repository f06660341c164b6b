#!/usr/bin/env bash
# The quickstart: set up .venv, find Fashion-MNIST in local files, pretrain the inpainting pretext,
# then fine-tune and linear-probe pretrained vs random init on 10 labels per class with 3 seeds each,
# and print the comparison.
# Finished steps are reused when it is run again.
#   FASHION_MNIST=/path/to/idx-gz-files bash tools/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -f "$DATA/FashionMNIST/raw/train-images-idx3-ubyte" ]; then
  if [ "$DATA" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing Debian package dataset-fashion-mnist ..."
    (apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }) >/dev/null
  else
    echo "error: Fashion-MNIST not found in $DATA. On Debian: sudo apt-get install dataset-fashion-mnist." >&2
    echo "Elsewhere: download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist" >&2
    echo "and run: FASHION_MNIST=/folder/with/them bash tools/quickstart.sh" >&2
    exit 2
  fi
fi

SSL=.venv/bin/ssl
source tools/study_lib.sh
RUN=${RUN_DIR:-runs}
echo "quickstart: about 17 minutes on 2 CPU cores (the pretext about 15, six fine-tuning and six linear-probe runs about 2); finished steps are reused"
if [ -f "$RUN/quickstart_pretrain/encoder.pt" ]; then
  echo "reusing $RUN/quickstart_pretrain (delete it to pretrain again)"
else
  $SSL pretrain --recipe recipes/pretrain_fashion_mnist.yaml --data "$DATA" --output-dir "$RUN" --name quickstart_pretrain
fi
# Both inits under each protocol, one --name per protocol: ssl compare pairs them by seed.
for recipe in finetune_fashion_mnist_10_per_class linear_fashion_mnist_10_per_class; do
  prefix=${recipe%%_fashion_mnist_10_per_class}10
  finetune_inits "$RUN/quickstart" "$prefix" "recipes/$recipe.yaml" "$RUN/quickstart_pretrain" 0,1,2 "pretrained random" --data "$DATA"
done
$SSL compare "$RUN/quickstart" --output "$RUN/quickstart/compare.md" --logdir "$RUN/quickstart/compare"
echo "TensorBoard: .venv/bin/tensorboard --logdir $RUN   (probe/knn_top1 and probe/linear_top1 of quickstart_pretrain: the encoder during the pretext)"
