#!/usr/bin/env bash
# What inpainting pretraining is worth on real photos (issue 20), against three baselines, each under
# the same protocols and seeds: PyTorch's default init (random), a data-dependent init with no pretext
# (datadep: k-means first layer, per-layer rescaling; Krähenbühl et al. 2016), and supervised training
# from scratch on all labels (the architecture's ceiling).
#   1. CIFAR-10: recipes/pretrain_cifar10_light_decoder.yaml on the 50,000 training photos (32 px), then
#      fine-tune (recipes/finetune_cifar10_10_per_class.yaml) and linear probe at 10 and 100 labels per
#      class and a linear classifier on all labels, 3 seeds, every init; the ceiling; scored on the
#      10,000 test photos.
#   2. Imagenette: recipes/pretrain_imagenette_64_light_decoder.yaml on the 9,469 training photos (64 px),
#      the same transfers scored on the 3,925 val photos.
#   3. Imagenette's pretext transferred to CIFAR-10 at 32 px, a dataset it never saw (as COCO -> VOC):
#      fine-tuned at 10 and 100 labels per class on pooled features (the latent is tied to 64 px).
# Each part writes RUN/photos/<part>/compare.md, compare.png and compare_budgets.png (accuracy against
# labels per class, error bars over seeds). Finished runs are reused when it is run again.
#   bash tools/photo_transfer.sh PHOTOS [cifar10|imagenette|cross ...]
# PHOTOS holds cifar10/{train,test}/<class>/ and imagenette/{train,val}/<class>/ (ImageFolder trees).
# Time on 2 CPU cores (measured, docs/photos.md): the pretexts 28 min 25 s (CIFAR-10) and 26 min 50 s
# (Imagenette), 11-13 min of transfers per dataset, the ceiling (CEILING_SEEDS, default one seed: 7.5 min
# on CIFAR-10, 3.5 on Imagenette) and 4 min for the cross part: about 1 h 40 min in all. Shorter checks: CIFAR_STEPS /
# IMAGENETTE_STEPS override the pretext lengths, SEEDS the seeds, PRETEXT_FLAGS adds flags to both
# pretexts (e.g. a smaller --batch-size for a tiny set). CIFAR_RECIPE / IMAGENETTE_RECIPE pick other
# pretext recipes (the first study's: recipes/pretrain_cifar10.yaml and recipes/pretrain_imagenette_64.yaml,
# with FT_FLAGS="--weight-scale loaded" for its fine-tuning protocol); a RUN_DIR holds one recipe per
# set, and naming another there is refused. PROTOCOLS picks the transfers (default: ft10 lin10 ft100
# lin100 linall ceiling; the cross part runs ft10 and ft100 only), e.g. PROTOCOLS="ft10 lin10 ft100" for a
# pretext variant's target budgets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PHOTOS=${1:?usage: tools/photo_transfer.sh PHOTOS [cifar10|imagenette|cross ...]}
shift
PARTS=${*:-cifar10 imagenette cross}
SSL=${SSL:-.venv/bin/ssl}
source tools/study_lib.sh
RUN=${RUN_DIR:-runs}/photos
SEEDS=${SEEDS:-0,1,2}
CEILING_SEEDS=${CEILING_SEEDS:-0}
last_seed=${SEEDS##*,}

need() {  # folder: an ImageFolder split the study reads
  [ -d "$1" ] || { echo "error: $1 not found (PHOTOS must hold cifar10/{train,test} and imagenette/{train,val})" >&2; exit 2; }
}
CIFAR_RECIPE=${CIFAR_RECIPE:-recipes/pretrain_cifar10_light_decoder.yaml}
IMAGENETTE_RECIPE=${IMAGENETTE_RECIPE:-recipes/pretrain_imagenette_64_light_decoder.yaml}
pretext() {  # run name, recipe, data root, train split, steps override, extra flags...
  local name=$1 recipe=$2 data=$3 split=$4 steps=$5; shift 5
  # Finished runs are reused: refuse to mix transfers of one pretext recipe with another's in one RUN_DIR.
  mkdir -p "$RUN"
  local stamp="$RUN/$name.recipe" want="$recipe ${steps:-} ${PRETEXT_FLAGS:-}"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$want" ]; then
    echo "error: $RUN/$name was made by '$(cat "$stamp")', not '$want': use another RUN_DIR or delete $RUN" >&2; exit 2
  fi
  echo "$want" > "$stamp"
  if [ -f "$RUN/$name/encoder.pt" ]; then echo "reusing $RUN/$name (delete it to pretrain again)"; return; fi
  $SSL pretrain --recipe "$recipe" --data "$data/$split" --probe-data "$data" --output-dir "$RUN" --name "$name" \
    ${steps:+--max-steps "$steps"} ${PRETEXT_FLAGS:-} "$@"
}
every_init() {  # out folder, protocol name, recipe, pretext run, extra flags...: pretrained and both baselines
  local out=$1 prefix=$2 recipe=$3 ckpt=$4; shift 4
  finetune_inits "$out" "$prefix" "$recipe" "$ckpt" "$SEEDS" "pretrained random datadep" "$@"
}
PROTOCOLS=$(echo ${PROTOCOLS:-ft10 lin10 ft100 lin100 linall ceiling})  # one space between names
for protocol in $PROTOCOLS; do
  case $protocol in ft10|lin10|ft100|lin100|linall|ceiling) ;;
    *) echo "error: PROTOCOLS names $protocol (use ft10 lin10 ft100 lin100 linall ceiling)" >&2; exit 2 ;;
  esac
done
wanted() { [[ " $PROTOCOLS " == *" $1 "* ]]; }
protocols() {  # out folder, pretext run, data root, fine-tune recipe, linear recipe, extra flags...
  local out=$1 ckpt=$2 data=$3 ft=$4 lin=$5; shift 5
  ! wanted ft10 || every_init "$out" ft10 "$ft" "$ckpt" --data "$data" ${FT_FLAGS:-} "$@"
  ! wanted lin10 || every_init "$out" lin10 "$lin" "$ckpt" --data "$data" "$@"
  ! wanted ft100 || every_init "$out" ft100 "$ft" "$ckpt" --data "$data" --labels-per-class 100 --epochs 15 --eval-every 15 ${FT_FLAGS:-} "$@"
  ! wanted lin100 || every_init "$out" lin100 "$lin" "$ckpt" --data "$data" --labels-per-class 100 --epochs 50 --eval-every 50 "$@"
  ! wanted linall || every_init "$out" linall "$lin" "$ckpt" --data "$data" --labels-per-class 0 --batch-size 256 --epochs 20 --eval-every 20 "$@"
  # The ceiling: every label, every layer trained from PyTorch's default init (a cosine schedule, 10 epochs).
  ! wanted ceiling || finetune_inits "$out" supervised_all "$ft" "$ckpt" "$CEILING_SEEDS" random --data "$data" --labels-per-class 0 --batch-size 128 \
    --lr 0.05 --lr-schedule cosine --layer-decay 1 --epochs 10 --eval-every 10 ${FT_FLAGS:-} "$@"
}
compare() {  # out folder
  $SSL compare "$1" --output "$1/compare.md" --logdir "$1/compare"
}

one_dataset() {  # set name, test split, pretext recipe, pretext steps override: pretext, transfers, compare
  local set=$1 test_split=$2 recipe=$3 steps=$4
  need "$PHOTOS/$set/train"; need "$PHOTOS/$set/$test_split"
  pretext "${set}_pretext" "$recipe" "$PHOTOS/$set" train "$steps"
  protocols "$RUN/$set" "$RUN/${set}_pretext" "$PHOTOS/$set" "recipes/finetune_${set}_10_per_class.yaml" \
    "recipes/linear_${set}_10_per_class.yaml"
  compare "$RUN/$set"
}

for part in $PARTS; do
  case $part in
    cifar10) one_dataset cifar10 test "$CIFAR_RECIPE" "${CIFAR_STEPS:-}" ;;
    imagenette) one_dataset imagenette val "$IMAGENETTE_RECIPE" "${IMAGENETTE_STEPS:-}" ;;
    cross)  # Imagenette's 64 px pretext on CIFAR-10 at 32 px: pooled features (the latent conv is tied to 64 px)
      need "$PHOTOS/cifar10/train"; need "$PHOTOS/imagenette/train"
      if ! wanted ft10 && ! wanted ft100; then echo "cross: PROTOCOLS names neither ft10 nor ft100, the cross part's transfers: skipped"; continue; fi
      pretext imagenette_pretext "$IMAGENETTE_RECIPE" "$PHOTOS/imagenette" train "${IMAGENETTE_STEPS:-}"
      out=$RUN/imagenette_to_cifar10
      for budget in 10 100; do
        wanted "ft$budget" || continue
        epochs=$([ $budget = 10 ] && echo 30 || echo 15)
        every_init "$out" "ft${budget}_from_imagenette" recipes/finetune_cifar10_10_per_class.yaml "$RUN/imagenette_pretext" \
          --data "$PHOTOS/cifar10" --image-size 32 --features pooled --labels-per-class $budget --epochs $epochs --eval-every $epochs \
          ${FT_FLAGS:-}
      done
      compare "$out" ;;
    *) echo "error: unknown part $part (cifar10, imagenette or cross)" >&2; exit 2 ;;
  esac
done
for part in cifar10 imagenette imagenette_to_cifar10; do
  if [ -f "$RUN/$part/compare.md" ]; then echo "== $part"; cat "$RUN/$part/compare.md"; fi
done
.venv/bin/python tools/probe_table.py "$RUN"/*_pretext/ || true
