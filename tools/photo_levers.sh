#!/usr/bin/env bash
# The pretext levers on real photos (issue 20): each lever is recipes/pretrain_cifar10.yaml with one
# change, pretrained for ${LEVER_STEPS:-1500} steps on the CIFAR-10 training photos, read first by its
# online probe (kNN and logistic regression on 1000 labelled training and 1000 test photos, from
# the random init at step 0) and then by the transfer protocols it is built for: fine-tuned and
# linear-probed at 10 labels per class, 3 seeds, against a random init of the same architecture
# under the same protocol. Finished runs are reused when it is run again.
# SET=imagenette runs the same search from recipes/pretrain_imagenette_64.yaml on Imagenette at 64 px
# (the levers' sizes in proportion), scored on its val photos.
#   bash tools/photo_levers.sh PHOTOS [LEVER ...]     PHOTOS holds cifar10/{train,test}/<class>/
#   SET=imagenette bash tools/photo_levers.sh PHOTOS [LEVER ...]   PHOTOS holds imagenette/{train,val}/
# On 2 quiet CPU cores: 4-8 minutes a lever for CIFAR-10 (3-7 of pretext), 5-9 for Imagenette (3-7 of
# pretext), plus about 5 for each architecture's baselines the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PHOTOS=${1:?usage: [SET=cifar10|imagenette] tools/photo_levers.sh PHOTOS [LEVER ...]}
shift
SET=${SET:-cifar10}
case $SET in
  cifar10) TEST=test; OUT_NAME=photo_levers; SCALE=1 ;;  # SCALE: the image size over 32 px
  imagenette) TEST=val; OUT_NAME=photo_levers_imagenette; SCALE=2 ;;
  *) echo "error: SET=$SET is not a photo set (use cifar10 or imagenette)" >&2; exit 2 ;;
esac
DATA=$PHOTOS/$SET
[ -d "$DATA/train" ] && [ -d "$DATA/$TEST" ] || { echo "error: $DATA/train and $DATA/$TEST not found (unpack $SET as an ImageFolder tree)" >&2; exit 2; }
SSL=${SSL:-.venv/bin/ssl}
source tools/study_lib.sh
RUN=${RUN_DIR:-runs}
OUT=$RUN/$OUT_NAME
STEPS=${LEVER_STEPS:-1500}
if [ "$SET" = cifar10 ]; then PRE=recipes/pretrain_cifar10.yaml; else PRE=recipes/pretrain_imagenette_64.yaml; fi
FT=recipes/finetune_${SET}_10_per_class.yaml
LIN=recipes/linear_${SET}_10_per_class.yaml

lever_flags() {  # the one change each lever makes to the recipe
  case $1 in
    ref) ;;
    patch8) echo --patch-size $((8 * SCALE)) ;;  # twice the recipe's patch (named for CIFAR-10's 32 px)
    patch2) echo --patch-size $((2 * SCALE)) ;;  # half of it
    ratio050) echo --mask-ratio 0.5 ;;
    ratio090) echo --mask-ratio 0.9 ;;
    norm_pix) echo --norm-pix-loss ;;
    skips_masked) echo --skips masked ;;
    known_too) echo --w-known 0.1 --w-hole 0.9 ;;
    fill_mean) echo --fill mean ;;
    lr_1e-3) echo --lr-g 1e-3 ;;
    rect) echo --mask rect --rect-min 0.3 --rect-max 0.5 ;;
    crop035) echo --crop-scale 0.35 ;;
    crop020) echo --crop-scale 0.2 ;;
    stages4) echo --widths 64,128,256,512 ;;  # CIFAR-10's recipe has it; at 64 px: a 4x4 deepest map
    stages5) echo --widths 64,64,128,256,512 ;;  # Imagenette's recipe has it; at 32 px: a 1x1 deepest map
    wide) [ "$SET" = cifar10 ] && echo --widths 128,256,512,1024 || echo --widths 128,128,256,512,1024 ;;
    latent128) echo --bottleneck-channels 128 ;;
    sparse) echo --sparse-stages $((SCALE + 1)) ;;  # SparK: the stages whose cells fit in a hole patch see only the context
    decoder050) echo --decoder-scale 0.5 ;;  # every decoder stage half the encoder's width (MAE: a light decoder)
    decoder025) echo --decoder-scale 0.25 ;;
    sparse_masked) echo --sparse-stages $((SCALE + 1)) --skips masked ;;  # SparK's encoder and its decoder's masked skips together
    sparse_decoder025) echo --sparse-stages $((SCALE + 1)) --decoder-scale 0.25 ;;  # the two least bad Imagenette levers together
    sparse_patch8) echo --patch-size $((8 * SCALE)) --sparse-stages $((SCALE + 2)) ;;  # sparse stages with twice the recipe's patch
    *) echo "error: unknown lever $1" >&2; exit 2 ;;
  esac
}

pretext() {  # lever name: the recipe with that lever, at the lever length
  local name=$1 flags
  flags=$(lever_flags "$name")
  [ -f "$OUT/$name/encoder.pt" ] || $SSL pretrain --recipe $PRE --data "$DATA/train" --probe-data "$DATA" \
    --output-dir "$OUT" --name "$name" --max-steps "$STEPS" --warmup-steps $((STEPS / 20)) \
    --probe-every $((STEPS / 3)) --save-every-steps 0 --sample-every "$STEPS" $flags
}
transfer() {  # protocol name, recipe, init, pretext run: seeds 0-2 (finished ones are kept)
  # --weight-scale loaded: the levers were screened (docs/photos.md) with the fine-tuning recipe as it
  # was before it adopted --weight-scale init; kept so every lever keeps the same protocol.
  finetune_inits "$OUT/ft" "$1" "$2" "$4" 0,1,2 "$3" --data "$DATA" --weight-scale loaded
}

LEVERS=${*:-ref crop035 stages4 patch8 ratio050 norm_pix}
for lever in $LEVERS; do
  pretext "$lever"
  transfer "ft10_$lever" $FT pretrained "$OUT/$lever"
  transfer "lin10_$lever" $LIN pretrained "$OUT/$lever"
  # one random baseline per architecture (ssl compare pairs it with every pretext run of that architecture)
  arch=$(.venv/bin/python -c "import sys,yaml; c=yaml.safe_load(open(sys.argv[1])); print('_'.join(str(c.get(k) or d).replace(',', '-') for k, d in (('widths', '64,64,128,256,512'), ('bottleneck_channels', ''), ('image_size', ''))))" "$OUT/$lever/config.yaml")
  transfer "ft10_random_$arch" $FT random "$OUT/$lever"
  transfer "lin10_random_$arch" $LIN random "$OUT/$lever"
  transfer "ft10_datadep_$arch" $FT datadep "$OUT/$lever"
done
$SSL compare "$OUT/ft" --output "$OUT/compare.md" --logdir "$OUT/compare"
.venv/bin/python tools/probe_table.py "$OUT"/*/
