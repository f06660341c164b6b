"""What the COCO -> VOC job costs, on paper, to scale (issue 22): for each transfer recipe, the measured
FLOPs of one training step per image (``torch.utils.flop_counter``, forward and backward) and the
measured JPEG decode rate of one loader process on this machine, turned into the GPU-hours of COCO
train2017 (118,287 images) x E epochs on 1 and 8 GPUs and the loader workers each GPU needs.

    .venv/bin/python tools/cost_table.py [--epochs 50] [--mfu 0.35] [--peak-tflops 989] [--bench runs/bench.json]

The MFU is an assumption unless --bench names a `tools/bench.py --device cuda` result, whose measured
MFU then replaces it; the peak defaults to an H100/H200's dense bf16 figure. It prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_inpaint.config import load_recipe, resolve_config  # noqa: E402
from ssl_inpaint.data.sources import read_image  # noqa: E402
from ssl_inpaint.data.transforms import resized  # noqa: E402
from ssl_inpaint.options.pretrain import PretrainConfig  # noqa: E402
from ssl_inpaint.models import make_generator  # noqa: E402

COCO_TRAIN = 118_287
RECIPES = ("recipes/pretrain_coco_unet_128.yaml", "recipes/pretrain_coco_resnet50_224.yaml")


def flops_per_image(recipe: str) -> tuple[float, int]:
    """(training FLOPs per image, image size) of the recipe's generator: one forward and backward."""
    config = resolve_config(PretrainConfig, load_recipe(recipe), {"data": "unused", "precision": "fp32"})
    generator = make_generator(config, 3).train()
    batch = 2
    x = torch.randn(batch, 4, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter:
        generator(x).float().pow(2).mean().backward()
    return counter.get_total_flops() / batch, config.image_size


def decode_rate(size: int, seconds: float = 4.0) -> float:
    """Images per second one process decodes and resizes (640x480 JPEGs, COCO's usual size, with the
    reduced JPEG decoding `ssl pretrain` uses)."""
    rng = np.random.default_rng(0)
    folder = Path(tempfile.mkdtemp(prefix="ssl_cost_"))
    paths = []
    for i in range(16):
        pixels = (rng.random((480, 640, 3)) * 64 + np.linspace(0, 190, 640)[None, :, None]).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        paths.append(folder / f"{i}.jpg")
        paths[-1].write_bytes(buffer.getvalue())
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        resized(read_image(paths[done % len(paths)], "RGB", size), size)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model-FLOP utilisation (a measured one comes from --bench)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, TFLOP/s")
    p.add_argument("--bench", default="", help="a tools/bench.py --device cuda JSON, for its measured MFU")
    args = p.parse_args()
    torch.set_num_threads(1)
    mfu, source = args.mfu, "assumed"
    if args.bench and Path(args.bench).is_file():
        measured = [s.get("mfu") for s in json.loads(Path(args.bench).read_text()).get("steps", []) if s.get("mfu")]
        if measured:
            mfu, source = float(np.median(measured)), f"measured ({args.bench})"
    print(f"COCO train2017 ({COCO_TRAIN} images) x {args.epochs} epochs; MFU {mfu:.0%} {source} of {args.peak_tflops:g} TFLOP/s bf16; "
          f"decode rates measured on this machine, one process\n")
    print("| recipe | size | GFLOP per image (train step) | img/s per GPU | GPU-hours | wall, 1 GPU | wall, 8 GPUs | decode img/s per worker | workers per GPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes: list[str] = []
    for recipe in RECIPES:
        flops, size = flops_per_image(recipe)
        rate = mfu * args.peak_tflops * 1e12 / flops
        total_hours = COCO_TRAIN * args.epochs / rate / 3600
        decode = decode_rate(size)
        workers = int(np.ceil(rate / decode))
        print(f"| `{Path(recipe).name}` | {size} | {flops / 1e9:.1f} | {rate:,.0f} | {total_hours:.1f} | {total_hours:.1f} h | "
              f"{total_hours / 8:.2f} h | {decode:.0f} | {workers} |")
        notes.append(f"`{Path(recipe).name}`: " + (
            f"{workers} JPEG-decoding workers per GPU is more than a node has: decode once with `ssl pack` (a pack reads from "
            f"memory at over 10,000 images/s a process, docs/performance.md); a {flops / 1e9:.1f} GFLOP step is also too small "
            f"to be compute-bound, so the assumed MFU overstates it: measure it with tools/gpu_check.sh"
            if workers > 16 else f"{workers} loader workers per GPU feed it from JPEGs"))
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
