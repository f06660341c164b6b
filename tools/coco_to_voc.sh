#!/usr/bin/env bash
# The mission's whole job in one command (issue 22): pack COCO train2017 once, pretrain the inpainting
# pretext on it with NPROC processes (one per GPU), fine-tune, linear-probe and SVM-probe the encoder on
# Pascal VOC 2007 for the pretrained encoder and for the same architecture from PyTorch's default init
# (and the data-dependent init, for the U-Net), over SEEDS, and print the comparison.
#   bash tools/coco_to_voc.sh COCO VOCDEVKIT            the real job (COCO with annotations/ and train2017/)
#   bash tools/coco_to_voc.sh --smoke                   the same path on generated tiny COCO / VOC, a few steps (CPU)
# Env: ENCODER (unet, default, recipes/pretrain_coco_unet_128.yaml; or resnet50, recipes/pretrain_coco_resnet50_224.yaml),
#      NPROC (processes for the pretext and fine-tuning, default 1), SEEDS (default 0,1,2), RUN_DIR (default runs),
#      PRETEXT_FLAGS / TRANSFER_FLAGS (added to every pretrain / finetune command, e.g. --max-steps 20000).
# Outputs: RUN_DIR/coco_to_voc/{pack_<size>,pretext,voc07}/ and RUN_DIR/coco_to_voc/voc07/compare.md (+ charts).
# Finished steps are kept when it is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SSL=${SSL:-$PY -m ssl_inpaint}
source tools/study_lib.sh
ENCODER=${ENCODER:-unet}
NPROC=${NPROC:-1}
RUN=${RUN_DIR:-runs}/coco_to_voc
SMOKE=
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=1 SEEDS=${SEEDS:-0,1}
  TINY=$RUN/tiny_data
  [ -d "$TINY/coco" ] || $PY tools/make_tiny_datasets.py --out "$TINY" --coco-train 24 --voc-train 40 --voc-test 40 > /dev/null
  COCO=$TINY/coco VOC=$TINY/VOCdevkit
else
  bash tools/setup.sh
  COCO=${1:?usage: tools/coco_to_voc.sh COCO VOCDEVKIT | --smoke}
  VOC=${2:?usage: tools/coco_to_voc.sh COCO VOCDEVKIT | --smoke}
fi
SEEDS=${SEEDS:-0,1,2}
case $ENCODER in
  unet) PRETEXT=recipes/pretrain_coco_unet_128.yaml SIZE=128 FT_SIZE=224 INITS="pretrained random datadep" ENC_FLAGS=() ;;
  resnet50) PRETEXT=recipes/pretrain_coco_resnet50_224.yaml SIZE=224 FT_SIZE=224 INITS="pretrained random"
            ENC_FLAGS=(--encoder timm:resnet50 --bn-stats running) ;;
  *) echo "error: ENCODER must be unet or resnet50, got $ENCODER" >&2; exit 2 ;;
esac
PRE=()   # the smoke run's sizes: what a CPU does in a minute, through every command of the real job
FT=()
if [ -n "$SMOKE" ]; then
  if [ "$ENCODER" = unet ]; then SIZE=32 FT_SIZE=64; PRE=(--widths 8,8,16,16,32 --bottleneck-channels 16 --patch-size 4)
  else SIZE=64 FT_SIZE=64; PRE=(--patch-size 16); fi
  PRE+=(--image-size "$SIZE" --batch-size 4 --val-images 4 --max-steps 3 --precision fp32 --num-workers 0 --sample-every 3)
  FT=(--epochs 1 --eval-every 1 --batch-size 8 --bn-images 16 --num-workers 0 --precision fp32)
fi

pack=$RUN/pack_$SIZE
[ -f "$pack/pack.json" ] || $SSL pack --dataset coco --data "$COCO" --split train2017 --image-size "$SIZE" --output "$pack"
if [ ! -f "$RUN/pretext/encoder.pt" ]; then
  $SSL pretrain --recipe "$PRETEXT" --dataset packed --data "$pack" --nproc "$NPROC" --output-dir "$RUN" --name pretext \
    "${PRE[@]}" ${PRETEXT_FLAGS:-}
fi
out=$RUN/voc07
for protocol in finetune linear svm; do
  recipe=recipes/finetune_voc07.yaml
  [ $protocol = finetune ] || recipe=recipes/finetune_voc07_$protocol.yaml
  finetune_inits "$out" "voc07_$protocol" "$recipe" "$RUN/pretext" "$SEEDS" "$INITS" --data "$VOC" \
    --image-size "$FT_SIZE" --nproc "$NPROC" "${ENC_FLAGS[@]}" "${FT[@]}" ${TRANSFER_FLAGS:-}
done
$SSL compare "$out" --output "$out/compare.md" --logdir "$out/compare"
