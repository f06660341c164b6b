#!/usr/bin/env bash
# The seeded results of every command, as one line per output: run it before and after a change
# that must not move any number (a refactor), then diff the two files. About 7 minutes on 2 CPU cores.
# It runs: the quickstart's pretext (40 steps, probe and validation on), fine-tuning and a linear
# probe on Fashion-MNIST, ssl compare, the seed-003 M1 pretext with both discriminators and the
# seed-000 GLCIC schedule on tiny data, ssl evaluate, ssl inpaint and ssl pixelcnn.
#   bash tools/fingerprint.sh before.txt; git checkout other; bash tools/fingerprint.sh after.txt; diff before.txt after.txt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "$1")
W=$(mktemp -d)
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONPATH=$PWD
ssl() { "$PY" -m ssl_inpaint "$@" > "$W/log.txt" 2>&1 || { echo "failed: ssl $*" >&2; tail -3 "$W/log.txt" >&2; exit 1; }; }
FM=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
"$PY" tools/make_tiny_datasets.py --out "$W/tiny" > /dev/null
ssl pretrain --recipe recipes/pretrain_fashion_mnist.yaml --data "$FM" --max-steps 40 --probe-every 20 --sample-every 20 --output-dir "$W" --name qs
ssl finetune --recipe recipes/finetune_fashion_mnist_10_per_class.yaml --data "$FM" --init pretrained --checkpoint "$W/qs" --seeds 0 --epochs 3 --eval-every 3 --output-dir "$W/ft" --name ft
ssl finetune --recipe recipes/linear_fashion_mnist_10_per_class.yaml --data "$FM" --init random --seeds 1 --epochs 5 --eval-every 5 --output-dir "$W/ft" --name lin
ssl finetune --recipe recipes/finetune_fashion_mnist_10_per_class.yaml --data "$FM" --init random --seeds 0 --epochs 2 --eval-every 2 --output-dir "$W/ft" --name ft
ssl compare "$W/ft" --output "$W/compare.md" --logdir "$W/compare"
ssl pretrain --recipe recipes/pretrain_coco_m1.yaml --data "$W/tiny/coco" --image-size 64 --batch-size 2 --max-steps 4 --val-images 2 --bottleneck-channels 32 --num-workers 0 --output-dir "$W" --name m1
ssl pretrain --recipe recipes/seed000_glcic_completion.yaml --dataset folder --data "$W/tiny/images" --image-size 64 --batch-size 2 --max-steps 3 --val-images 2 --num-workers 0 --output-dir "$W" --name s0
ssl evaluate --checkpoint "$W/m1" --dataset folder --data "$W/tiny/images" --mask rect --output-dir "$W" --name eval
ssl inpaint "$W/tiny/images" --checkpoint "$W/m1" --box 4,4,20,20 --output "$W/inp"
ssl pixelcnn --recipe recipes/seed002_pixelcnnpp_lower_half.yaml --dataset folder --data "$W/tiny/images" --max-steps 2 --val-images 4 --batch-size 2 --filters 32 --blocks 2 --sample-images 1 --output-dir "$W" --name px
"$PY" - "$W" > "$OUT" <<'PY'
import hashlib, json, sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

work = Path(sys.argv[1])


def tensors(path: Path) -> str:
    """Hash of the weights in a checkpoint (not its RNG or optimizer state), by key."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for part in ("generator", "global_d", "local_d", "model", "state_dict"):
        for key, value in sorted((state.get(part) or {}).items()):
            digest.update(f"{part}/{key}".encode() + value.float().numpy().tobytes())
    return digest.hexdigest()[:16]


for path in sorted(work.rglob("*.pt")):
    if not path.name.startswith("epoch_"):
        print(path.relative_to(work), tensors(path))
for path in sorted(work.rglob("*.json")) + sorted(work.rglob("compare.md")):
    if "tiny" not in path.parts:
        data = json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()
        text = json.dumps(data, sort_keys=True) if path.suffix == ".json" else data
        print(path.relative_to(work), hashlib.sha256(text.replace(str(work), "W").encode()).hexdigest()[:16])
for path in sorted((work / "inp").rglob("*.png")):
    print(path.relative_to(work), hashlib.sha256(path.read_bytes()).hexdigest()[:16])
for run in ("qs", "m1", "s0", "px"):
    events = EventAccumulator(str(work / run), size_guidance={"scalars": 0})
    events.Reload()
    for tag in sorted(t for t in events.Tags()["scalars"] if not t.startswith("perf/")):
        print(run, tag, [round(e.value, 6) for e in events.Scalars(tag)])
PY
echo "fingerprint of $(git rev-parse --short HEAD) in $OUT (runs in $W)"
