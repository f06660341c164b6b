"""Fast in-memory search over pretext levers on Fashion-MNIST (issue 11), to decide what to build
into `ssl pretrain` and which recipe to run through the CLI. Not the source of any number in the docs:
those come from the recipes. It holds the data as tensors (no DataLoader), trains the package's own
U-Net generator with a given lever set, and reports, for the pretrained and the random-init encoder
under the same protocol, the linear-probe and kNN top-1 at 10 labels per class on 2,000 test images.

    .venv/bin/python tools/lever_search.py --steps 1500 --skips none --mask patches --ratio 0.75
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ssl_inpaint.checkpoint import ENCODER_FORMAT
from ssl_inpaint.storage import save_atomic
from ssl_inpaint.models.unet import UNetGenerator


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(root: Path, split: str) -> tuple[torch.Tensor, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = torch.from_numpy(read_idx(root / f"{prefix}-images-idx3-ubyte.gz").copy()).float().div(255)
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    images = F.interpolate(images[:, None], size=32, mode="bilinear", antialias=True, align_corners=False)
    return images * 2 - 1, labels


def patch_masks(n: int, size: int, patch: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    cells = (size // patch) ** 2
    keep = round(cells * ratio)
    order = torch.rand(n, cells, generator=gen).argsort(dim=1)
    grid = torch.zeros(n, cells)
    grid.scatter_(1, order[:, :keep], 1.0)
    side = size // patch
    return grid.view(n, 1, side, side).repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def rect_masks(n: int, size: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    masks = torch.zeros(n, 1, size, size)
    h = (torch.rand(n, generator=gen) * (hi - lo) + lo).mul(size).round().long()
    w = (torch.rand(n, generator=gen) * (hi - lo) + lo).mul(size).round().long()
    for i in range(n):
        t = int(torch.randint(0, size - h[i] + 1, (1,), generator=gen))
        l = int(torch.randint(0, size - w[i] + 1, (1,), generator=gen))
        masks[i, :, t : t + h[i], l : l + w[i]] = 1
    return masks


def features(encoder, images: torch.Tensor, which: str, batch: int = 1000) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            maps = encoder(torch.cat([x, torch.zeros_like(x[:, :1])], 1))
            chosen = {
                "latent": [maps[-1]],
                "pooled": [maps[-2]],
                "multi": maps[2:-1],
                "s3": [maps[2]],
            }[which]
            parts = []
            for m in chosen:
                if m.shape[-1] >= 4 and which in ("multi", "s3"):
                    parts.append(F.adaptive_avg_pool2d(m, 2).flatten(1))
                else:
                    parts.append(m.mean(dim=(2, 3)))
            out.append(torch.cat(parts, 1))
    return torch.cat(out).numpy()


def recalibrate_bn(encoder, images: torch.Tensor, batches: int = 20, batch: int = 256) -> None:
    """Running BatchNorm statistics re-estimated on clean (hole-free) images."""
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    encoder.train()
    with torch.no_grad():
        for i in range(batches):
            x = images[i * batch : (i + 1) * batch]
            encoder(torch.cat([x, torch.zeros_like(x[:, :1])], 1))
    encoder.eval()


def probe(encoder, train_x, train_y, test_x, test_y, which: str) -> dict[str, float]:
    a = features(encoder, train_x, which)
    b = features(encoder, test_x, which)
    scaler = StandardScaler().fit(a)
    result = {}
    for c in (0.01, 0.1, 1.0):
        clf = LogisticRegression(max_iter=3000, C=c).fit(scaler.transform(a), train_y)
        result[f"linear_C{c:g}"] = float((clf.predict(scaler.transform(b)) == test_y).mean())
    an = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-8)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-8)
    nearest = (bn @ an.T).argmax(1)
    result["nn1"] = float((train_y[nearest] == test_y).mean())
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--skips", default="none", choices=["none", "all", "masked"])
    p.add_argument("--mask", default="patches", choices=["patches", "rect"])
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--ratio", type=float, default=0.75)
    p.add_argument("--w-known", type=float, default=0.0)
    p.add_argument("--bottleneck", type=int, default=512)
    p.add_argument("--widths", default="64,64,128,256,512")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", default="pooled,multi")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mix-low", type=float, default=0.0, help="fraction of images masked at a ratio U[0.1, ratio] instead")
    p.add_argument("--out", default="")
    p.add_argument("--probe-every", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    train_x, train_y = load(root, "train")
    test_x, test_y = load(root, "test")
    rng = np.random.default_rng(0)
    few = np.concatenate([rng.permutation(np.flatnonzero(train_y == k))[:10] for k in range(10)])
    test_idx = np.random.default_rng(1).permutation(len(test_y))[:2000]
    widths = [int(w) for w in args.widths.split(",")]

    torch.manual_seed(args.seed)
    model = UNetGenerator(1, 32, widths, args.bottleneck, skips=args.skips)
    torch.manual_seed(args.seed)
    random_model = UNetGenerator(1, 32, widths, args.bottleneck, skips=args.skips)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    model.train()
    for step in range(args.steps):
        idx = torch.randint(0, len(train_x), (args.batch,), generator=gen)
        x = train_x[idx]
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if args.mask == "patches":
            m = patch_masks(args.batch, 32, args.patch, args.ratio, gen)
            if args.mix_low:
                n_low = int(args.batch * args.mix_low)
                low = patch_masks(n_low, 32, args.patch, float(torch.empty(1).uniform_(0.1, args.ratio, generator=gen)), gen)
                m[:n_low] = low
        else:
            m = rect_masks(args.batch, 32, 0.3, 0.5, gen)
        inp = torch.cat([x * (1 - m), m], 1)
        out = model(inp)
        err = (out - x).square()
        hole = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
        known = (err * (1 - m)).flatten(1).sum(1) / (1 - m).flatten(1).sum(1).clamp_min(1)
        loss = (hole + args.w_known * known).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.4f} {time.time() - start:.0f}s", flush=True)
        if args.probe_every and step and step % args.probe_every == 0:
            model.encoder.eval()
            print(step, probe(model.encoder, train_x[few], train_y[few], test_x[test_idx], test_y[test_idx], "pooled"), flush=True)
            model.train()
    train_time = time.time() - start
    results = {"args": vars(args), "train_s": round(train_time, 1)}
    # The yardstick no network has to earn: a logistic regression on the standardised pixels.
    pixels_train, pixels_test = train_x[few].flatten(1).numpy(), test_x[test_idx].flatten(1).numpy()
    scaler = StandardScaler().fit(pixels_train)
    results["pixels"] = {
        f"linear_C{c:g}": float(
            (LogisticRegression(max_iter=5000, C=c).fit(scaler.transform(pixels_train), train_y[few]).predict(scaler.transform(pixels_test)) == test_y[test_idx]).mean()
        )
        for c in (0.01, 0.1, 1.0)
    }
    print("pixels", results["pixels"], flush=True)
    for name, net in (("pretrained", model), ("random", random_model)):
        enc = net.encoder
        for bn_mode in ("running", "clean"):
            if bn_mode == "clean":
                recalibrate_bn(enc, train_x[torch.randperm(len(train_x), generator=gen)[:5120]])
            else:
                enc.eval()
            for which in args.features.split(","):
                r = probe(enc, train_x[few], train_y[few], test_x[test_idx], test_y[test_idx], which)
                results[f"{name}/{bn_mode}/{which}"] = r
                print(name, bn_mode, which, r, flush=True)
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results))
        torch.save(model.state_dict(), args.out + ".pt")
        # The encoder in the format `ssl finetune --checkpoint` reads, to try transfer protocols on it.
        folder = Path(args.out + "_run")
        folder.mkdir(exist_ok=True)
        save_atomic(
            {
                "format": ENCODER_FORMAT, "version": 1, "arch": dict(model.encoder.arch), "image_channels": 1,
                "fill": [0.0], "state_dict": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
                "step": args.steps, "pretrain_config": vars(args),
            },
            folder / "encoder.pt",
        )


if __name__ == "__main__":
    main()
