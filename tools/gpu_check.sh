#!/usr/bin/env bash
# Every CUDA path of the toolkit in one short run (issue 22), ending in one table: a few steps of each
# pretext family (the transfer U-Net, the seed-003 GAN with its two discriminators and two gradient
# scalers, a timm ResNet-50 with masked stages) in fp32, bf16 and fp16; channels_last and torch.compile;
# torchrun with NCCL; fine-tuning, the linear probe and the SVM on VOC; `ssl inpaint`; and tools/bench.py
# (step time, MFU, the loader with workers against the step it feeds). About 8 minutes on one GPU.
#   bash tools/gpu_check.sh [OUT]          (OUT default runs/gpu_check; the table is OUT/table.md)
# Without a GPU it runs its CPU fall-back: the same commands at fp32 only, smaller, no compile and no
# bench (a couple of minutes on 2 cores; tests/test_distributed.py runs it), so the script itself is tested.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-.venv/bin/python}
SSL=("$PY" -m ssl_inpaint)
mkdir -p "$OUT"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=cuda PRECISIONS="fp32 bf16 fp16" SIZE=128 BIG=224 BIG_PATCH=32 STEPS=20 BATCH=16
else
  DEVICE=cpu PRECISIONS="fp32" SIZE=32 BIG=64 BIG_PATCH=16 STEPS=2 BATCH=4
fi
TABLE=$OUT/table.md
printf '| check | device | result | seconds | note |\n|---|---|---|---|---|\n' > "$TABLE"
failed=0

check() {  # name, command...: run it, one row of the table (the last error line when it fails)
  local name=$1; shift
  local start=$SECONDS log="$OUT/logs/${name//[^A-Za-z0-9_.-]/_}.log"
  mkdir -p "$OUT/logs"
  if "$@" > "$log" 2>&1; then
    local note; note=$(grep -Eo '[0-9.]+ img/s' "$log" | tail -1)
    printf '| %s | %s | ok | %d | %s |\n' "$name" "$DEVICE" $((SECONDS - start)) "$note" >> "$TABLE"
  else
    failed=$((failed + 1))
    local why; why=$(grep -E '^error:|Error' "$log" | tail -1 | cut -c1-160 | tr '|' '/')
    printf '| %s | %s | FAILED | %d | %s (%s) |\n' "$name" "$DEVICE" $((SECONDS - start)) "${why:-see the log}" "$log" >> "$TABLE"
  fi
}

TINY=$OUT/tiny
[ -d "$TINY/coco" ] || "$PY" tools/make_tiny_datasets.py --out "$TINY" --coco-train 48 > /dev/null
COMMON=(--dataset coco --data "$TINY/coco" --split train2017 --max-steps "$STEPS" --batch-size "$BATCH" --val-images 4
        --num-workers 0 --sample-every "$STEPS" --device "$DEVICE" --output-dir "$OUT/runs")
SMALL_UNET=()
[ $DEVICE = cpu ] && SMALL_UNET=(--widths 8,8,16,16,32 --bottleneck-channels 16)

for precision in $PRECISIONS; do
  check "pretrain unet_128 $precision" "${SSL[@]}" pretrain --recipe recipes/pretrain_coco_unet_128.yaml "${COMMON[@]}" \
    --image-size "$SIZE" --patch-size $((SIZE / 8)) "${SMALL_UNET[@]}" --precision "$precision" --name "unet_$precision"
  check "pretrain m1 GAN $precision" "${SSL[@]}" pretrain --recipe recipes/pretrain_coco_m1.yaml "${COMMON[@]}" \
    --image-size "$SIZE" --local-size 32 "${SMALL_UNET[@]}" --precision "$precision" --name "m1_$precision"
  check "pretrain resnet50 masked $precision" "${SSL[@]}" pretrain --recipe recipes/pretrain_coco_resnet50_224.yaml "${COMMON[@]}" \
    --image-size "$BIG" --patch-size "$BIG_PATCH" --precision "$precision" --name "resnet50_$precision"
done
check "pretrain channels_last" "${SSL[@]}" pretrain --recipe recipes/pretrain_coco_unet_128.yaml "${COMMON[@]}" \
  --image-size "$SIZE" --patch-size $((SIZE / 8)) "${SMALL_UNET[@]}" --precision fp32 --channels-last --name unet_cl
if [ $DEVICE = cuda ]; then
  check "pretrain compile" "${SSL[@]}" pretrain --recipe recipes/pretrain_coco_unet_128.yaml "${COMMON[@]}" \
    --image-size "$SIZE" --patch-size $((SIZE / 8)) --precision bf16 --compile --name unet_compile
fi
check "torchrun 1 process ($([ $DEVICE = cuda ] && echo nccl || echo gloo))" "$PY" -m torch.distributed.run --standalone \
  --nproc-per-node=1 -m ssl_inpaint pretrain --recipe recipes/pretrain_coco_unet_128.yaml "${COMMON[@]}" \
  --image-size "$SIZE" --patch-size $((SIZE / 8)) "${SMALL_UNET[@]}" --name unet_torchrun
FT=(--data "$TINY/VOCdevkit" --checkpoint "$OUT/runs/unet_fp32" --image-size "$BIG" --seeds 0 --epochs 1 --eval-every 1
    --batch-size 8 --bn-images 16 --num-workers 0 --device "$DEVICE" --output-dir "$OUT/voc")
for protocol in finetune linear svm; do
  recipe=recipes/finetune_voc07.yaml
  [ $protocol = finetune ] || recipe=recipes/finetune_voc07_$protocol.yaml
  check "finetune voc07 $protocol" "${SSL[@]}" finetune --recipe "$recipe" "${FT[@]}" --name "voc_$protocol" --precision fp32
done
[ $DEVICE = cuda ] && check "finetune voc07 bf16" "${SSL[@]}" finetune --recipe recipes/finetune_voc07.yaml "${FT[@]}" \
  --name voc_bf16 --precision bf16
check "inpaint" "${SSL[@]}" inpaint "$TINY/images" --checkpoint "$OUT/runs/unet_fp32" --box 4,4,12,12 -o "$OUT/inpainted" \
  --device "$DEVICE" --overwrite
if [ $DEVICE = cuda ]; then
  check "bench (step, MFU, loader)" "$PY" tools/bench.py --device cuda --precisions fp32,bf16 --sizes 128 \
    --recipe recipes/pretrain_coco_m1.yaml --e2e-steps 20 --json "$OUT/bench.json"
fi
echo "gpu_check on $DEVICE: $failed failed; logs in $OUT/logs"
cat "$TABLE"
[ $failed = 0 ]
