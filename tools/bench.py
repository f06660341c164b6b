"""How fast is `ssl pretrain`, against a plain PyTorch loop over the same networks (issue 12).

One interleaved run that times, with the same shapes and batches:
  (a) our pretext step exactly as `ssl pretrain` runs it (``train_step``: joint G+D, or G only), with
      the engine's optimizer and memory-format settings;
  (b) a plain eager reference of the same generator and discriminators with the same losses, written
      as a user would (the architecture table's nn.Conv2d / nn.ConvTranspose2d layers, ``torch.optim.Adam``
      with its defaults, contiguous tensors, discriminators not frozen in the G step);
  (c) the pretext data pipeline alone (images/s out of the DataLoader) for COCO-layout JPEGs, an image
      folder and Fashion-MNIST;
  (d) the achieved GFLOP/s of the step (``torch.utils.flop_counter``) against a measured convolution
      peak, and on CUDA the MFU against that peak;
  (e) `ssl pretrain` itself, end to end (loader included), its own ``perf/img_per_s`` read from its
      TensorBoard events, against (b).
It prints a table and a last line with the ratio ours/plain, and writes JSON. Nothing here is a
test: timings depend on the machine and what else runs on it; run it on an otherwise idle machine.

    .venv/bin/python tools/bench.py                       # docs/performance.md's table (about 10 min on 2 cores)
    .venv/bin/python tools/bench.py --sizes 32 --quick    # a one-minute look
    .venv/bin/python tools/bench.py --device cuda --precisions fp32,bf16

COCO and image-folder JPEGs are generated (640x480, COCO's usual size) unless --coco / --folder name
real ones; Fashion-MNIST is read from --fashion-mnist when its files are there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_datasets import make_coco  # noqa: E402

from ssl_inpaint.config import load_recipe, resolve_config  # noqa: E402
from ssl_inpaint.data import create_source  # noqa: E402
from ssl_inpaint.data.packed import pack_images  # noqa: E402
from ssl_inpaint.distributed import Distributed  # noqa: E402
from ssl_inpaint.models import make_discriminators, make_generator, make_models
from ssl_inpaint.options.pretrain import PretrainConfig  # noqa: E402
from ssl_inpaint.engine.pretrain import (  # noqa: E402
    loss_weights as engine_loss_weights,
    make_optimizers,
    place_models,
    prepare_data,
    run_pretrain,
    to_device,
)
from ssl_inpaint.gan_step import train_step  # noqa: E402
from ssl_inpaint.runtime import (  # noqa: E402
    configure_threads,
    resolve_workers,
)
from ssl_inpaint.losses import LossWeights  # noqa: E402
from ssl_inpaint.models.discriminators import crop_boxes, hole_boxes  # noqa: E402
from ssl_inpaint.models.unet import WholeMapConv2d, WholeMapConvTranspose2d  # noqa: E402

Step = Callable[[dict[str, torch.Tensor]], None]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(step: Step, batches: list[dict], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    sync(device)
    return sum(len(b["image"]) for b in batches) / (time.perf_counter() - start)


# --- (a) our step, (b) the plain reference -------------------------------------------------------


def plain_loss_weights(config: PretrainConfig) -> LossWeights:
    """The terms the plain loop implements: reconstruction of known pixels and hole, and the two
    adversarial terms. A recipe with perceptual, style or norm-pix terms is timed with all of them in
    ``ours`` (the engine's ``loss_weights``), and the plain loop says it lacks them."""
    weights = engine_loss_weights(config)
    if weights.perceptual or weights.style or weights.norm_pix_patch:
        print("note: the plain loop has no perceptual, style or norm-pix terms; ours/plain compares unequal steps for this recipe")
    return LossWeights(weights.known, weights.hole, weights.adv_global, weights.adv_local)


def ours(config: PretrainConfig, channels: int, device: torch.device, phase: str) -> tuple[Step, torch.nn.Module]:
    """The engine's own step: the models (with the perceptual loss network when the recipe has one),
    optimizers, loss weights (every term) and memory format `ssl pretrain` builds, and its train_step."""
    torch.manual_seed(0)
    models = place_models(config, channels, Distributed(0, 1, 0, device))
    if config.compile:
        models.generator = torch.compile(models.generator)
        models.global_d = torch.compile(models.global_d) if models.global_d else None
        models.local_d = torch.compile(models.local_d) if models.local_d else None
    opts = make_optimizers(config, models, device)
    weights = engine_loss_weights(config)
    models.train()

    def step(batch: dict) -> None:
        train_step(models, [to_device(batch, device, config.channels_last)], opts, weights, config.recon_loss, phase, config.precision)

    return step, models.generator


def as_table_layers(module: torch.nn.Module) -> torch.nn.Module:
    """The network as its architecture table writes it, with plain nn.Conv2d / nn.ConvTranspose2d
    layers where ours computes a whole-map convolution as the matrix product it is
    (``WholeMapConv2d``): what a user's own implementation of Table 1 runs. Same weights, same
    function; only the kernels differ."""
    for layer in module.modules():
        if type(layer) is WholeMapConv2d:
            layer.__class__ = torch.nn.Conv2d
        elif type(layer) is WholeMapConvTranspose2d:
            layer.__class__ = torch.nn.ConvTranspose2d
    return module


def plain(config: PretrainConfig, channels: int, device: torch.device, phase: str) -> Step:
    """The same networks and losses in the loop a user would write first: the table's layers,
    ``torch.optim.Adam`` with its defaults, the discriminators not frozen in the generator step."""
    torch.manual_seed(0)
    generator = as_table_layers(make_generator(config, channels)).to(device)
    global_d, local_d = (d.to(device) if d is not None else None for d in make_discriminators(config, channels))
    discriminators = [d for d in (global_d, local_d) if d is not None]
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam([p for d in discriminators for p in d.parameters()], lr=config.lr_d, betas=betas) if discriminators else None
    size = config.resolved_local_size
    w = plain_loss_weights(config)
    joint = phase == "joint" and opt_d is not None

    def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))

    def d_terms(images: torch.Tensor, boxes: torch.Tensor, real: bool) -> torch.Tensor:
        loss = bce(global_d(images), real) if global_d is not None else 0.0
        return loss + (bce(local_d(crop_boxes(images, boxes, size)), real) if local_d is not None else 0.0)

    def step(batch: dict) -> None:
        image, mask, x = (batch[k].to(device) for k in ("image", "mask", "input"))
        fake = generator(x)
        completed = image * (1 - mask) + fake * mask
        if joint:
            boxes = hole_boxes(mask, size)
            loss_d = d_terms(image, boxes, True) + d_terms(completed.detach(), boxes, False)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        err = (fake - image) ** 2
        known = ((err * (1 - mask)).flatten(1).sum(1) / (1 - mask).flatten(1).sum(1).clamp_min(1)).mean()
        hole = ((err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)).mean()
        loss_g = w.known * known + w.hole * hole
        if joint:
            loss_g = loss_g + w.adv_global * d_terms(completed, boxes, True)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


# --- (c) the data pipeline, (d) FLOPs and the convolution peak -----------------------------------


def loader_rates(config: PretrainConfig, batches: int) -> tuple[float, float]:
    """Images/s out of the pretext DataLoader alone over ``batches`` batches of a fixed random set of
    images: (first pass, second pass). The second pass shows what an in-memory source keeps between
    epochs (Fashion-MNIST's resized images); files are decoded again."""
    data = prepare_data(config)
    batches = min(batches, len(data.train) // config.batch_size)
    if batches == 0:
        return float("nan"), float("nan")
    chosen = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: batches * config.batch_size]
    loader = DataLoader(data.train, batch_size=config.batch_size, sampler=chosen.tolist(), num_workers=config.num_workers,
                        drop_last=True, persistent_workers=config.num_workers > 0)
    if config.num_workers:
        next(iter(loader))  # worker start-up is not throughput
    rates = []
    for _ in range(2):
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["image"])
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def step_flops(step: Step, batch: dict) -> int:
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return counter.get_total_flops()


def conv_peak(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """GFLOP/s of a large 3x3 convolution forward: the most this machine's conv kernels deliver."""
    batch, channels, side = (64, 256, 56) if device.type == "cuda" else (16, 256, 32)
    x = torch.randn(batch, channels, side, side, device=device).to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
    flops = 2 * batch * channels * channels * 9 * side * side
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(2):
            conv(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            conv(x)
        sync(device)
    return flops * repeats / (time.perf_counter() - start) / 1e9


def ours_rate(results: dict, recipe: str, size: int) -> float:
    """Our default fp32 step's img/s for a recipe and size (its first phase timed), 0 when not timed."""
    rows = [r for r in results["steps"] if r["recipe"] == recipe and r["size"] == size and r["precision"] == "fp32" and r["variant"] == "default"]
    return rows[0]["ours_img_s"] if rows else 0.0


# --- where the time goes (--profile) ---------------------------------------------------------------


def profile_steps(step: Step, batch: dict, rows: int = 12) -> list[dict]:
    """The ops with the most self time over two steps (``torch.profiler``, grouped by input shapes),
    in ms per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(2):
            step(batch)
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 2e3
    return [{"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 2e3, 1), "share": round(e.self_cpu_time_total / 2e3 / total, 3),
             "calls_per_step": e.count // 2, "shapes": str(e.input_shapes)[:90]} for e in events[:rows]]


def optimizer_update_ms(params: list[torch.nn.Parameter], repeats: int = 5) -> dict[str, float]:
    """ms per Adam update of ``params`` (random gradients): PyTorch's CPU default (a loop over the
    tensors), foreach, and fused (ours)."""
    for param in params:
        param.grad = torch.randn_like(param)
    times = {}
    for label, kwargs in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.Adam(params, lr=1e-6, **kwargs)
        optimizer.step()
        start = time.perf_counter()
        for _ in range(repeats):
            optimizer.step()
        times[label] = round((time.perf_counter() - start) / repeats * 1e3, 1)
    return times


def where_the_time_goes(results: dict, recipe_path: str, overrides: dict, size: int, args, device) -> None:
    """Our joint step's and the plain step's heaviest ops at ``size``, and the optimizer update."""
    config = resolve_config(PretrainConfig, load_recipe(recipe_path), {
        **overrides, "image_size": size, "local_size": max(32, size // 2), "device": args.device, "num_workers": 0, "val_images": 8,
    })
    data = prepare_data(config)
    batch = next(iter(DataLoader(data.train, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                 generator=torch.Generator().manual_seed(0))))
    phase = "joint" if config.adversarial else "reconstruction"
    ours_step, _ = ours(config, data.image_channels, device, phase)
    steps = {"ours": ours_step, "plain": plain(config, data.image_channels, device, phase)}
    results["profile"] = {"size": size, "phase": phase}
    for label, step in steps.items():
        step(batch)  # warm-up
        rows = profile_steps(step, batch)
        results["profile"][label] = rows
        print(f"{label} {phase} step at {size} px, heaviest ops (self time, ms per step):")
        for row in rows:
            print(f"  {row['ms_per_step']:>8.1f} {row['share']:>6.1%} x{row['calls_per_step']:<3} {row['op']:<30} {row['shapes']}")
    torch.manual_seed(0)
    models = make_models(config, data.image_channels)
    params = [p for module in (models.generator, *models.discriminators) for p in module.parameters()]
    times = optimizer_update_ms(params)
    results["profile"]["adam_ms"] = times
    print(f"Adam update of the {sum(p.numel() for p in params) / 1e6:.0f} M parameters, ms: " + ", ".join(f"{k} {v}" for k, v in times.items()))


# --- (e) ssl pretrain end to end -------------------------------------------------------------------


def pretrain_rate(config: PretrainConfig, workdir: Path, steps: int) -> float:
    """Median ``perf/img_per_s`` that `ssl pretrain` logs itself, skipping its first logged window."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = dataclasses.replace(config, output_dir=str(workdir), name=f"e2e_{time.time_ns()}", max_steps=steps,
                              log_every=max(1, steps // 5), sample_every=10**9, save_every_steps=0, save_every_epochs=0,
                              probe_every=0)
    run_dir = run_pretrain(run)
    events = EventAccumulator(str(run_dir)).Reload()
    rates = [s.value for s in events.Scalars("perf/img_per_s")][1:]
    return statistics.median(rates)


def pack_photos(results: dict, coco: Path, size: int, output: Path) -> Path:
    """``ssl pack`` of the COCO photos at ``size``; its one-time rate (images/s) goes in the results."""
    source = create_source("coco", coco, "train2017")
    start = time.perf_counter()
    pack_images(source, size, output)
    rate = len(source) / (time.perf_counter() - start)
    results.setdefault("pack", []).append({"size": size, "images": len(source), "img_s": round(rate, 1)})
    print(f"ssl pack of {len(source)} COCO photos at {size} px (once): {rate:.0f} img/s", flush=True)
    return output


def generated_photos(root: Path, count: int) -> Path:
    """A COCO-layout folder of ``count`` 640x480 JPEGs (the annotation file makes it a COCO split too)."""
    if not (root / "annotations" / "instances_train2017.json").exists():
        make_coco(root, np.random.default_rng(0), {"train2017": count}, size=(640, 480))
    return root


HEADER = (f"{'recipe':<22} {'size':>4} {'phase':<14} {'prec':<5} {'variant':<16} {'ours img/s':>10} {'plain img/s':>11} "
          f"{'ours/plain':>10} {'GFLOP/step':>10} {'GFLOP/s':>8} {'of peak':>7}")


def time_steps(results: dict, recipe_path: str, overrides: dict, sizes: list[int], phases: list[str], args, device) -> None:
    """Rows of ours (default and each --variants switch) vs plain, interleaved, for one recipe."""
    recipe = load_recipe(recipe_path)
    label_recipe = Path(recipe_path).stem
    for size in sizes:
        for precision in args.precisions.split(","):
            config = resolve_config(PretrainConfig, recipe, {
                **overrides, "image_size": size, "local_size": max(32, size // 2), "precision": precision,
                "device": args.device, "num_workers": 0, "val_images": 8,
            })
            data = prepare_data(config)
            loader = DataLoader(data.train, batch_size=config.batch_size, shuffle=True, num_workers=0, drop_last=True,
                                generator=torch.Generator().manual_seed(0))
            pool = [b for b, _ in zip(loader, range(4))]
            window = [pool[i % len(pool)] for i in range(args.steps)]
            wanted = [ph for ph in phases if ph != "joint" or config.adversarial]
            for phase in wanted:
                plain_step = plain(config, data.image_channels, device, phase)
                plain_step(pool[0])  # warm-up: allocator, oneDNN primitive caches
                variants = [("default", config)]
                if precision == "fp32" and phase == wanted[0]:
                    # Each switch flipped from the recipe's setting: "channels_last" on M1, "no channels_last"
                    # on the quickstart's recipe, which turns it on.
                    variants += [(("no " if getattr(config, v) else "") + v, dataclasses.replace(config, **{v: not getattr(config, v)}))
                                 for v in args.variants.split(",") if v]
                steps = {}
                for label, variant in variants:
                    step, _ = ours(variant, data.image_channels, device, phase)
                    start = time.perf_counter()
                    step(pool[0])  # warm-up, and for compile the compilation
                    steps[label] = (step, time.perf_counter() - start)
                flops = step_flops(steps["default"][0], pool[0])
                rates: dict[str, list[float]] = {label: [] for label in [*steps, "plain"]}
                for _ in range(args.rounds):  # interleaved, so drifting clocks or neighbours hit every variant
                    for label, (step, _) in steps.items():
                        rates[label].append(images_per_second(step, window, device))
                    rates["plain"].append(images_per_second(plain_step, window, device))
                plain_rate = statistics.median(rates["plain"])
                peak = results["peak_gflops"][precision]
                for label, (_, first_step_s) in steps.items():
                    ours_rate = statistics.median(rates[label])
                    gflops = flops / 1e9 * ours_rate / config.batch_size
                    results["steps"].append({
                        "recipe": label_recipe, "size": size, "batch": config.batch_size, "phase": phase, "precision": precision,
                        "variant": label, "ours_img_s": round(ours_rate, 2), "plain_img_s": round(plain_rate, 2),
                        "ratio": round(ours_rate / plain_rate, 3), "gflop_per_step": round(flops / 1e9, 2),
                        "gflop_s": round(gflops, 1), "of_peak": round(gflops / peak, 3), "first_step_s": round(first_step_s, 1),
                    })
                    note = f"  (first step {first_step_s:.0f} s: compilation)" if label.endswith("compile") else ""
                    print(f"{label_recipe:<22} {size:>4} {phase:<14} {precision:<5} {label:<16} {ours_rate:>10.1f} {plain_rate:>11.1f} "
                          f"{ours_rate / plain_rate:>10.2f} {flops / 1e9:>10.2f} {gflops:>8.1f} {gflops / peak:>7.1%}{note}", flush=True)


def time_end_to_end(results: dict, recipe_path: str, overrides: dict, steps: int, workdir: Path, args) -> None:
    """`ssl pretrain` itself for ``steps`` steps against the plain step of the same recipe and size."""
    config = resolve_config(PretrainConfig, load_recipe(recipe_path), {**overrides, "device": args.device, "val_images": 8})
    rate = pretrain_rate(config, workdir, steps)
    label_recipe = Path(recipe_path).stem
    plain_rate = next(
        r["plain_img_s"] for r in results["steps"]
        if r["recipe"] == label_recipe and r["size"] == config.image_size and r["precision"] == "fp32" and r["variant"] == "default"
    )
    workers = resolve_workers(config.num_workers, torch.device(args.device))
    results["e2e"].append({"recipe": label_recipe, "size": config.image_size, "batch": config.batch_size,
                           "num_workers": workers, "img_s": round(rate, 2), "plain_img_s": plain_rate,
                           "ratio": round(rate / plain_rate, 3)})
    print(f"ssl pretrain end to end, {label_recipe} ({config.image_size} px, batch {config.batch_size}, {workers} loader workers, its own perf/img_per_s, "
          f"loader included): {rate:.2f} img/s; plain step {plain_rate:.2f} img/s; ours/plain {rate / plain_rate:.2f}", flush=True)


def time_loaders(results: dict, args, coco: Path, folder: Path, fashion: bool, largest: int, work: Path) -> None:
    """The loader alone, first and second pass, for each dataset kind against the step it feeds."""
    # (kind, path, split, size, batch, the step it feeds): JPEGs at M1's settings, and every kind at the
    # quickstart's (32 px, batch 128, whose step is the quickstart's pretext).
    m1_step = ours_rate(results, Path(args.recipe).stem, largest)
    quick_step = ours_rate(results, "pretrain_fashion_mnist", 32) if fashion else ours_rate(results, Path(args.recipe).stem, 32)
    kinds = [("coco", str(coco), "train2017", 128, args.batch, m1_step), ("folder", str(folder), "", 128, args.batch, m1_step),
             ("coco", str(coco), "train2017", 32, 128, quick_step), ("folder", str(folder), "", 32, 128, quick_step)]
    if fashion:
        kinds.append(("fashion_mnist", args.fashion_mnist, "train", 32, 128, quick_step))
    for size, batch, step_rate in ((128, args.batch, m1_step), (32, 128, quick_step)):  # the COCO JPEGs packed once (ssl pack)
        kinds.append(("packed", str(pack_photos(results, coco, size, work / f"pack{size}")), "", size, batch, step_rate))
    print(f"{'loader':<13} {'size':>4} {'batch':>5} {'workers':>7} {'img/s':>8} {'again':>8} {'x the step it feeds':>20}")
    for kind, path, split, size, batch, step_rate in kinds:
        for workers in sorted({0, min(2, os.cpu_count() or 1)}):
            config = resolve_config(PretrainConfig, load_recipe(args.recipe), {
                "dataset": kind, "data": path, "split": split, "image_size": size, "batch_size": batch, "local_size": 32,
                "num_workers": workers, "val_images": 8, "mask": "centre" if kind != "fashion_mnist" else "patches",
            })
            rate, again = loader_rates(config, batches=max(4, 512 // batch))
            ratio = rate / step_rate if step_rate else float("nan")
            results["loader"].append({"dataset": kind, "size": size, "batch": batch, "workers": workers, "img_s": round(rate, 1),
                                      "second_pass_img_s": round(again, 1), "step_img_s": step_rate, "ratio": round(ratio, 2)})
            print(f"{kind:<13} {size:>4} {batch:>5} {workers:>7} {rate:>8.1f} {again:>8.1f} {ratio:>20.1f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="recipes/pretrain_coco_m1.yaml", help="the networks and losses to time")
    p.add_argument("--sizes", default="32,64,128")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--phases", default="joint,reconstruction", help="joint: G+D; reconstruction: G only")
    p.add_argument("--precisions", default="fp32", help="fp32,bf16 (bf16 on CPU needs AVX512-BF16/AMX to pay)")
    p.add_argument("--steps", type=int, default=4, help="steps per timing window")
    p.add_argument("--rounds", type=int, default=3, help="interleaved windows per variant (the median is kept)")
    p.add_argument("--variants", default="channels_last,compile",
                   help="switches timed flipped from the recipe's setting (fp32, the first phase)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--coco", default="", help="a real COCO root (else generated)")
    p.add_argument("--folder", default="", help="a real image folder (else the generated COCO images)")
    p.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist",
                   help="Fashion-MNIST idx .gz files: adds the quickstart's pretext (recipes/pretrain_fashion_mnist.yaml)")
    p.add_argument("--e2e-steps", type=int, default=30, help="steps of each end-to-end `ssl pretrain` run (0: skip)")
    p.add_argument("--quick", action="store_true", help="one round, two steps, no variants, no end-to-end run")
    p.add_argument("--profile", action="store_true",
                   help="only where the time goes: the heaviest ops of our step and the plain one at the largest --sizes, and Adam's update")
    p.add_argument("--json", default="runs/bench.json")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.steps, args.e2e_steps, args.variants = 1, 2, 0, ""
    device = torch.device(args.device)
    threads = configure_threads(0, device)
    work = Path(tempfile.mkdtemp(prefix="ssl_bench_"))
    # Enough photos for four loader batches of 128, and that the end-to-end run stays inside one epoch
    # (an epoch end saves a checkpoint).
    coco = Path(args.coco) if args.coco else generated_photos(work / "coco", max(4 * 128 + 16, (args.e2e_steps + 2) * args.batch + 8))
    folder = Path(args.folder) if args.folder else coco / "train2017"
    fashion = Path(args.fashion_mnist, "train-images-idx3-ubyte.gz").exists()
    results: dict = {"device": str(device), "threads": threads, "torch": torch.__version__, "recipe": args.recipe,
                     "batch": args.batch, "steps": [], "loader": [], "e2e": [], "peak_gflops": {}}
    print(f"bench: {threads} intra-op threads on {device}; timing windows of {args.steps} steps, median of {args.rounds}")

    for precision in args.precisions.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        results["peak_gflops"][precision] = round(conv_peak(device, dtype), 1)
    print("conv peak GFLOP/s (3x3 conv forward): " + ", ".join(f"{k} {v}" for k, v in results["peak_gflops"].items()))

    photos = {"dataset": "coco", "data": str(coco), "split": "train2017", "batch_size": args.batch}
    sizes = [int(v) for v in args.sizes.split(",")]
    if args.profile:
        where_the_time_goes(results, args.recipe, photos, max(sizes), args, device)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        return
    print(HEADER)
    time_steps(results, args.recipe, photos, sizes, args.phases.split(","), args, device)
    quickstart = {"data": args.fashion_mnist}
    if fashion:
        time_steps(results, "recipes/pretrain_fashion_mnist.yaml", quickstart, [32], ["reconstruction"], args, device)

    time_loaders(results, args, coco, folder, fashion, max(sizes), work)

    if args.e2e_steps:
        time_end_to_end(results, args.recipe, {**photos, "image_size": max(sizes), "local_size": max(32, max(sizes) // 2)},
                        args.e2e_steps, work / "runs", args)
        if fashion:
            time_end_to_end(results, "recipes/pretrain_fashion_mnist.yaml", quickstart, args.e2e_steps * 3, work / "runs", args)
    main_rows = [r for r in results["steps"] if r["phase"] == "joint" and r["precision"] == "fp32" and r["variant"] == "default"]
    if main_rows:
        ratio = statistics.median(r["ratio"] for r in main_rows)
        print(f"ours/plain (step, median over sizes, joint G+D fp32): {ratio:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
