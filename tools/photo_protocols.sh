#!/usr/bin/env bash
# Transfer-protocol variants on real photos (issue 20). Each variant is
# recipes/finetune_<SET>_10_per_class.yaml (a lin_* variant: recipes/linear_<SET>_10_per_class.yaml)
# with one change, applied to the pretrained encoder and
# to both baselines of its architecture (random, datadep), 3 seeds each, so every init gets the same
# protocol and the same tuning budget.
#   bash tools/photo_protocols.sh PHOTOS PRETEXT [PRETEXT ...]
# PRETEXT is a pretext run folder, or the name of a lever run of tools/photo_levers.sh
# (RUN/photo_levers/NAME). Results land in RUN/photo_levers/ft (LABELS=10) or
# RUN/photo_levers/ft<LABELS> (other budgets), each folder compared into RUN/photo_levers/compare_<folder>.md.
# Env: SET (cifar10, default, or imagenette: PHOTOS/SET and its recipe; imagenette's results go to
# RUN/photo_levers/imagenette_ft<LABELS>), PROTOCOL_VARIANTS (default: pooled multi), LABELS (labels per
# class, default 10; 100 runs half the epochs, as the study does), SEEDS (default 0,1,2), DATA_SEED (the
# labelled subset, default 0; another writes to RUN/photo_levers/<folder>_data<N>), VAL_PER_CLASS (default 0:
# none; N scores every run also on N held-out training photos per class, none of them labelled, writes to
# RUN/photo_levers/<folder>_val<N>, and the compare adds a table where each init takes the variant with its
# best mean validation score: protocol choice without the test photos; the test figures are unchanged).
# Time on 2 CPU cores, per variant and pretext (9 runs): about 1.5 min at 10 labels per class, 6 at 100;
# the two lin_* variants on Imagenette at 64 px, 2 min together.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PHOTOS=${1:?usage: tools/photo_protocols.sh PHOTOS PRETEXT [PRETEXT ...]}
shift
SET=${SET:-cifar10}
DATA=$PHOTOS/$SET
SSL=${SSL:-.venv/bin/ssl}
source tools/study_lib.sh
RUN=${RUN_DIR:-runs}/photo_levers
FT=recipes/finetune_${SET}_10_per_class.yaml
LIN=recipes/linear_${SET}_10_per_class.yaml
[ -f "$FT" ] || { echo "error: SET must be cifar10 or imagenette (no $FT)" >&2; exit 2; }
VARIANTS=${PROTOCOL_VARIANTS:-pooled multi}
LABELS=${LABELS:-10}
SEEDS=${SEEDS:-0,1,2}
DATA_SEED=${DATA_SEED:-0}  # which labelled images: another draws another subset, to confirm a protocol chosen on the first
VAL=${VAL_PER_CLASS:-0}
SUFFIX=$([ "$SET" = cifar10 ] || echo "${SET}_")ft$([ "$LABELS" = 10 ] && [ "$SET" = cifar10 ] || echo "$LABELS")$([ "$DATA_SEED" = 0 ] || echo "_data$DATA_SEED")$([ "$VAL" = 0 ] || echo "_val$VAL")
OUT=$RUN/$SUFFIX
EPOCHS=$([ "$LABELS" -ge 100 ] && echo 15 || echo 30)  # the recipe's 30 epochs at 10 per class; 15 at 100, as the study

LOADED="--weight-scale loaded"  # the variants are changes to the recipe as it was before it adopted --weight-scale init
variant_flags() {  # one protocol change each; the epochs of the long ones are multiples of the budget's EPOCHS
  case $1 in
    pooled) echo --features pooled $LOADED ;;
    multi) echo --features multi $LOADED ;;
    pooled_pad_crop) echo --features pooled --augment pad_crop,flip $LOADED ;;
    pooled_no_decay) echo --features pooled --layer-decay 1 $LOADED ;;
    # LP-FT (Kumar et al. 2022): the head first learns on the frozen encoder, then every layer, so the
    # first full-network steps do not start from a random head's gradients.
    pooled_lpft) echo --features pooled --epochs $((2 * EPOCHS)) --head-warmup-epochs "$EPOCHS" --eval-every $((2 * EPOCHS)) $LOADED ;;
    pooled_long_cosine) echo --features pooled --epochs $((3 * EPOCHS)) --lr-schedule cosine --eval-every $((3 * EPOCHS)) $LOADED ;;
    # Every conv feeding a BatchNorm rescaled to PyTorch's init norm first (--weight-scale init): no output
    # changes, but the pretext's 4-7x larger deep convs no longer take 16-50x smaller effective SGD steps.
    pooled_rescaled) echo --features pooled --weight-scale init ;;
    pooled_rescaled_lpft) echo --features pooled --weight-scale init --epochs $((2 * EPOCHS)) --head-warmup-epochs "$EPOCHS" --eval-every $((2 * EPOCHS)) ;;
    pooled_rescaled_no_decay) echo --features pooled --weight-scale init --layer-decay 1 ;;
    # Changes to today's recipe (rescaled): random erasing, which shows every init holed photos as the
    # pretext did; stronger layer-wise decay (the early layers move less); a lower learning rate; twice
    # the epochs on a cosine schedule.
    pooled_rescaled_erase) echo --features pooled --weight-scale init --augment crop,flip,erase ;;
    pooled_rescaled_decay050) echo --features pooled --weight-scale init --layer-decay 0.5 ;;
    pooled_rescaled_lr0003) echo --features pooled --weight-scale init --lr 0.003 ;;
    # MAE's mixing of fine-tuning batches (timm's Mixup 0.8 and CutMix 1.0), and the same with twice the
    # epochs, as mixed labels are learnt slower.
    pooled_rescaled_mixup) echo --features pooled --weight-scale init --mixup 0.8 --cutmix 1.0 ;;
    pooled_rescaled_mixup_long) echo --features pooled --weight-scale init --mixup 0.8 --cutmix 1.0 --epochs $((2 * EPOCHS)) --eval-every $((2 * EPOCHS)) ;;
    # Smaller batches: the recipe's batches of 32 take three steps per epoch of 100 labelled photos
    # (drop_last), 90 in all; batches of 16 take six per epoch at the same learning rate.
    pooled_rescaled_batch16) echo --features pooled --weight-scale init --batch-size 16 ;;
    pooled_rescaled_long_cosine) echo --features pooled --weight-scale init --epochs $((2 * EPOCHS)) --lr-schedule cosine --eval-every $((2 * EPOCHS)) ;;
    # L2-SP (Li et al. 2018): the encoder's weights pulled back towards where fine-tuning started (the
    # pretext's, or the baseline's init) with weight alpha: --l2sp 0.01, 0.1, 1 and 10.
    pooled_rescaled_l2sp001) echo --features pooled --weight-scale init --l2sp 0.01 ;;
    pooled_rescaled_l2sp01) echo --features pooled --weight-scale init --l2sp 0.1 ;;
    pooled_rescaled_l2sp1) echo --features pooled --weight-scale init --l2sp 1 ;;
    pooled_rescaled_l2sp10) echo --features pooled --weight-scale init --l2sp 10 ;;
    pooled_pad_crop_lpft) echo --features pooled --augment pad_crop,flip --epochs $((2 * EPOCHS)) --head-warmup-epochs "$EPOCHS" --eval-every $((2 * EPOCHS)) $LOADED ;;
    # Linear probes (the linear recipe, its own epochs): as it is, and on BatchNorm statistics re-estimated
    # on clean photos first, as the fine-tuning recipe does (the pretext's come from holed inputs).
    lin_pooled) ;;
    lin_bn_clean) echo --bn-stats clean ;;
    *) echo "error: unknown protocol variant $1" >&2; exit 2 ;;
  esac
}
transfer() {  # protocol name, init, pretext run, variant, flags...
  local prefix=$1 init=$2 ckpt=$3 variant=$4; shift 4
  if [[ $variant == lin_* ]]; then  # the linear recipe keeps its own epochs
    finetune_inits "$OUT" "$prefix" "$LIN" "$ckpt" "$SEEDS" "$init" --data "$DATA" --labels-per-class "$LABELS" --data-seed "$DATA_SEED" \
      --val-per-class "$VAL" "$@"
  else
    finetune_inits "$OUT" "$prefix" "$FT" "$ckpt" "$SEEDS" "$init" --data "$DATA" --labels-per-class "$LABELS" --data-seed "$DATA_SEED" \
      --val-per-class "$VAL" --epochs "$EPOCHS" --eval-every "$EPOCHS" "$@"
  fi
}
for pretext in "$@"; do
  if [ -d "$pretext" ]; then run=$pretext; else run=$RUN/$pretext; fi
  [ -f "$run/encoder.pt" ] || { echo "error: no pretext run at $run (a run folder, or a lever of tools/photo_levers.sh)" >&2; exit 2; }
  lever=$(basename "$run")
  arch=$(.venv/bin/python -c "import sys,yaml; c=yaml.safe_load(open(sys.argv[1])); print('_'.join(str(c.get(k) or d).replace(',', '-') for k, d in (('widths', '64,64,128,256,512'), ('bottleneck_channels', ''), ('image_size', ''))))" "$run/config.yaml")
  for variant in $VARIANTS; do
    flags=$(variant_flags "$variant")
    name=$([[ $variant == lin_* ]] && echo "lin${LABELS}${variant#lin_}" || echo "ft${LABELS}${variant}")
    transfer "${name}_$lever" pretrained "$run" "$variant" $flags
    for init in random datadep; do transfer "${name}_${init}_$arch" "$init" "$run" "$variant" $flags; done
  done
done
$SSL compare "$OUT" --output "$RUN/compare_$SUFFIX.md" --logdir "$RUN/compare_$SUFFIX" $([ "$VAL" = 0 ] || echo --choose-by-val)
