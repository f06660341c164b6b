#!/usr/bin/env bash
# What moves transfer on Fashion-MNIST (docs/results.md's ablation table, issue 11). Runs the quickstart
# first (the recipe's pretext and its transfer), then, one lever at a time:
#   pretext levers  skips (all / masked vs none), loss on known pixels too, MAE's norm_pix_loss,
#                   mask family and ratio, the adversarial term, the latent size, the seed-003 design
#                   as the report built it, and the pretext length;
#                   each lever is a ${ABLATION_STEPS:-1000}-step pretext of the recipe with one change,
#                   set against the same recipe at the same length ("ref");
#   label budgets   (on the quickstart's pretext) 100 labels per class, all 60,000 labels;
# the transfer-protocol levers (features, BatchNorm statistics, warm-up, layer decay, augmentation,
# regularisation) are tools/protocol_search.sh.
# Every row is 3 seeds per init; a random-init baseline runs under every protocol and encoder
# architecture that a pretrained row uses (ssl compare pairs only those). About 60 minutes on 2 CPU
# cores after the quickstart; finished runs are reused when it is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/quickstart.sh
source tools/study_env.sh
source tools/study_lib.sh
OUT=$RUN/study
STEPS=${ABLATION_STEPS:-1000}
PRE=recipes/pretrain_fashion_mnist.yaml
FT=recipes/finetune_fashion_mnist_10_per_class.yaml
LIN=recipes/linear_fashion_mnist_10_per_class.yaml
QUICK=$RUN/quickstart_pretrain

pretext() {  # name, extra flags...: the recipe at the ablation length with one lever changed
  local name=$1; shift
  [ -f "$OUT/$name/encoder.pt" ] || $SSL pretrain --recipe $PRE --data "$DATA" --output-dir "$OUT" --name "$name" \
    --max-steps "$STEPS" --warmup-steps $((STEPS / 20)) --probe-every "$STEPS" --save-every-steps 0 "$@"
}
transfer() {  # protocol name, recipe, init, pretext run, extra flags...: seeds 0-2 (finished ones are kept)
  local prefix=$1 recipe=$2 init=$3 ckpt=$4; shift 4
  finetune_inits "$OUT/ft" "$prefix" "$recipe" "$ckpt" 0,1,2 "$init" --data "$DATA" "$@"
}
both() {  # protocol name, recipe, pretext run, extra flags...: pretrained from that run, and random init
  local prefix=$1 recipe=$2 ckpt=$3; shift 3
  transfer "$prefix" "$recipe" pretrained "$ckpt" "$@"
  transfer "$prefix" "$recipe" random "$ckpt" "$@"
}

# --- pretext levers, each at the ablation length -------------------------------------------------
pretext ref
pretext skips_all --skips all
pretext skips_masked --skips masked
pretext loss_known_too --w-known 0.9 --w-hole 0.1
pretext norm_pix --norm-pix-loss
pretext mask_rect --mask rect --rect-min 0.3 --rect-max 0.5
pretext ratio_050 --mask-ratio 0.5
pretext adversarial --global-d --w-adv-global 1e-3 --lr-d 1e-3
pretext latent_4000 --bottleneck-channels 4000
[ -f "$OUT/seed003/encoder.pt" ] || $SSL pretrain --recipe recipes/pretrain_fashion_mnist_seed003.yaml --data "$DATA" \
  --output-dir "$OUT" --name seed003

# Transfers, the cheapest and most needed first. A pretrained row is named <protocol>_<pretext run>;
# the random baseline of each protocol runs once per encoder architecture (512- and 4000-channel
# latents) and ssl compare sets it against every pretext row of that protocol and architecture.
transfer lin10 $LIN random "$OUT/ref"
transfer ft10 $FT random "$OUT/ref"
transfer lin10_ref $LIN pretrained "$OUT/ref"
transfer ft10_ref $FT pretrained "$OUT/ref"
transfer lin10_quickstart $LIN pretrained "$QUICK"  # the pretext length: 6000 steps vs ref's 1000
transfer ft10_quickstart $FT pretrained "$QUICK"

# Label budgets, on the quickstart's pretext.
both lin100 $LIN "$QUICK" --labels-per-class 100 --epochs 50 --eval-every 50
both ft100 $FT "$QUICK" --labels-per-class 100 --epochs 15 --eval-every 15
# All 60,000 labels, frozen features: the figure set beside the Fashion-MNIST paper's pixel-space
# LinearSVC (83.6 %) and SVC-rbf (89.7 %).
both linall $LIN "$QUICK" --labels-per-class 0 --batch-size 256 --epochs 20 --eval-every 20

# Pretext levers: linear probes, then fine-tuning.
LEVERS="skips_all skips_masked loss_known_too norm_pix mask_rect ratio_050 adversarial"
for run in $LEVERS; do transfer "lin10_$run" $LIN pretrained "$OUT/$run"; done
for run in $LEVERS; do transfer "ft10_$run" $FT pretrained "$OUT/$run"; done
# The 4000-channel latent of Table 1, and the seed-003 design as built, against their own baseline.
transfer lin10_4000 $LIN random "$OUT/seed003"
for run in latent_4000 seed003; do transfer "lin10_4000_$run" $LIN pretrained "$OUT/$run"; done
transfer ft10_4000 $FT random "$OUT/seed003"
for run in latent_4000 seed003; do transfer "ft10_4000_$run" $FT pretrained "$OUT/$run"; done

$SSL compare "$OUT/ft" --output "$OUT/compare.md" --logdir "$OUT/compare"
