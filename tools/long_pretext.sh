#!/usr/bin/env bash
# Issue 11's longest pretext: recipes/pretrain_fashion_mnist_long.yaml (the quickstart's pretext at
# 12000 steps), then its transfer under the quickstart's protocols against random init, 3 seeds each:
# fine-tune and linear probe at 10 and 100 labels per class, and a linear classifier on all 60,000
# labels (beside the Fashion-MNIST paper's pixel-space LinearSVC 83.6 % and SVC-rbf 89.7 %).
# About 30 minutes of pretext and 7 of transfer on 2 CPU cores; finished runs are reused.
#   FASHION_MNIST=/path/to/idx-gz-files bash tools/long_pretext.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
source tools/study_env.sh
source tools/study_lib.sh
OUT=$RUN/long
FT=recipes/finetune_fashion_mnist_10_per_class.yaml
LIN=recipes/linear_fashion_mnist_10_per_class.yaml
PRE=$RUN/fmnist_long

[ -f "$PRE/encoder.pt" ] || $SSL pretrain --recipe recipes/pretrain_fashion_mnist_long.yaml --data "$DATA" \
  --output-dir "$RUN" --name fmnist_long
both() {  # protocol name, recipe, extra flags...: pretrained from the long pretext, and random init, seeds 0-2
  local prefix=$1 recipe=$2; shift 2
  finetune_inits "$OUT" "$prefix" "$recipe" "$PRE" 0,1,2 "pretrained random" --data "$DATA" "$@"
}
both ft10 $FT
both lin10 $LIN
both lin100 $LIN --labels-per-class 100 --epochs 50 --eval-every 50
both ft100 $FT --labels-per-class 100 --epochs 15 --eval-every 15
both linall $LIN --labels-per-class 0 --batch-size 256 --epochs 20 --eval-every 20
$SSL compare "$OUT" --output "$OUT/compare.md" --logdir "$OUT/compare"
.venv/bin/python tools/probe_table.py "$PRE"
