#!/usr/bin/env bash
# Transfer-protocol variants on real photos (issue 20), for pretext runs of tools/photo_levers.sh: each
# variant is recipes/finetune_cifar10_10_per_class.yaml with one change, applied to the pretrained
# encoder and to both baselines of its architecture (random, datadep), 3 seeds each, so every init
# gets the same protocol. Results land beside the levers' (RUN/photo_levers/ft) for one ssl compare.
#   bash tools/photo_protocols.sh PHOTOS LEVER [LEVER ...]   (pretext runs in RUN/photo_levers/LEVER)
# About 1.5 minutes a variant and lever on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PHOTOS=${1:?usage: tools/photo_protocols.sh PHOTOS LEVER [LEVER ...]}
shift
DATA=$PHOTOS/cifar10
SSL=${SSL:-.venv/bin/ssl}
OUT=${RUN_DIR:-runs}/photo_levers
FT=recipes/finetune_cifar10_10_per_class.yaml
VARIANTS=${PROTOCOL_VARIANTS:-pooled multi}

variant_flags() {
  case $1 in
    pooled) echo --features pooled ;;
    multi) echo --features multi ;;
    pooled_pad_crop) echo --features pooled --augment pad_crop,flip ;;
    pooled_no_decay) echo --features pooled --layer-decay 1 ;;
    *) echo "error: unknown protocol variant $1" >&2; exit 2 ;;
  esac
}
transfer() {  # protocol name, init, pretext run, flags...
  local prefix=$1 init=$2 ckpt=$3; shift 3
  [ -f "$OUT/ft/${prefix}_${init}_s2/metrics.json" ] || $SSL finetune --recipe $FT --data "$DATA" \
    --init "$init" --checkpoint "$ckpt" --seeds 0,1,2 --output-dir "$OUT/ft" --name "$prefix" "$@"
}
for lever in "$@"; do
  [ -f "$OUT/$lever/encoder.pt" ] || { echo "error: no pretext run $OUT/$lever (run tools/photo_levers.sh first)" >&2; exit 2; }
  arch=$(.venv/bin/python -c "import sys,yaml; c=yaml.safe_load(open(sys.argv[1])); print('_'.join(str(c.get(k) or d).replace(',', '-') for k, d in (('widths', '64,64,128,256,512'), ('bottleneck_channels', ''), ('image_size', ''))))" "$OUT/$lever/config.yaml")
  for variant in $VARIANTS; do
    flags=$(variant_flags "$variant")
    transfer "ft10${variant}_$lever" pretrained "$OUT/$lever" $flags
    for init in random datadep; do transfer "ft10${variant}_${init}_$arch" "$init" "$OUT/$lever" $flags; done
  done
done
$SSL compare "$OUT/ft" --output "$OUT/compare.md" --logdir "$OUT/compare"
