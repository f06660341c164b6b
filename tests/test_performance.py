"""The speed switches (issue 12): each keeps the arithmetic where it claims to, the thread budget fits
the loader workers into the cores, and progress in a log file is readable."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import ssl_inpaint.runs as runs
from ssl_inpaint.config import resolve_config
from ssl_inpaint import runtime
from ssl_inpaint.runs import RunLogger
from ssl_inpaint.models import make_models
from ssl_inpaint.engine.pretrain import make_optimizers, to_device
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.gan_step import train_step
from ssl_inpaint.errors import UserError
from ssl_inpaint.losses import LossWeights
from ssl_inpaint.masks import apply_mask
from ssl_inpaint.models.unet import WholeMapConv2d, WholeMapConvTranspose2d

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_thread_budget_leaves_one_core_per_loader_worker(monkeypatch, threads_restored):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 8)
    assert runtime.configure_threads(2, torch.device("cpu")) == 6 == torch.get_num_threads()
    assert runtime.configure_threads(8, torch.device("cpu")) == 1  # never below one thread
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four processes share the node's cores
    assert runtime.configure_threads(0, torch.device("cpu")) == 2


def test_auto_workers_load_in_the_main_process_on_cpu_and_fill_the_cores_on_cuda(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 16)
    assert runtime.resolve_workers(-1, torch.device("cpu")) == 0
    assert runtime.resolve_workers(-1, torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 GPUs share 16 cores
    assert runtime.resolve_workers(-1, torch.device("cuda")) == 1
    assert runtime.resolve_workers(3, torch.device("cpu")) == 3
    with pytest.raises(UserError, match="-1 \\(auto\\) or at least 0"):
        runtime.resolve_workers(-2, torch.device("cpu"))


def test_an_explicit_omp_num_threads_is_kept(monkeypatch, threads_restored):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(runtime, "usable_cores", lambda: 8)
    assert runtime.configure_threads(0, torch.device("cpu")) == 1


def test_optimizers_update_all_tensors_in_one_fused_kernel():
    assert runtime.multi_tensor(torch.device("cpu")) == runtime.multi_tensor(torch.device("cuda")) == {"fused": True}


def _gan_config() -> PretrainConfig:
    return resolve_config(PretrainConfig, {}, {
        "dataset": "folder", "data": ".", "image_size": 32, "bottleneck_channels": 32, "local_size": 32,
        "mask": "centre", "batch_size": 4,
    })


def _batches(n: int, channels: int = 3) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        image = torch.rand(4, channels, 32, 32, generator=generator) * 2 - 1
        mask = torch.zeros(4, 1, 32, 32)
        mask[..., 8:24, 8:24] = 1
        out.append({"image": image, "mask": mask, "input": torch.stack([apply_mask(i, m, torch.zeros(channels)) for i, m in zip(image, mask)])})
    return out


def _train(
    config: PretrainConfig, steps: int, fused: bool = True, table_layers: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[dict]]:
    """(weights, gradients of the last step, per-step loss stats) of the generator after ``steps``
    joint steps. ``table_layers``: the bottleneck pair as plain nn.Conv2d / nn.ConvTranspose2d."""
    torch.manual_seed(0)
    models = make_models(config, 3)
    if table_layers:
        for layer in models.generator.modules():
            if type(layer) in (WholeMapConv2d, WholeMapConvTranspose2d):
                layer.__class__ = layer.__class__.__bases__[0]
    if config.channels_last:
        models.generator = models.generator.to(memory_format=torch.channels_last)
        models.global_d = models.global_d.to(memory_format=torch.channels_last)
        models.local_d = models.local_d.to(memory_format=torch.channels_last)
    opts = make_optimizers(config, models, torch.device("cpu"))
    if not fused:  # PyTorch's own default on CPU: a loop over the tensors
        for opt in (opts.g, opts.d):
            for group in opt.param_groups:
                group["fused"], group["foreach"] = False, False
    weights = LossWeights(config.w_known, config.w_hole, config.w_adv_global, config.w_adv_local)
    stats = []
    for batch in _batches(steps):
        batch = to_device(batch, torch.device("cpu"), config.channels_last)
        stats.append(train_step(models, [batch], opts, weights, config.recon_loss, "joint"))
    named = list(models.generator.named_parameters())
    return (
        {k: v.detach().clone() for k, v in models.generator.state_dict().items()},
        {k: p.grad.clone() for k, p in named},
        stats,
    )


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fused_optimizer_takes_the_loops_steps_from_the_same_gradients(optimizer):
    config = dataclasses.replace(_gan_config(), optimizer=optimizer, weight_decay=0.05)
    def optimizers():
        torch.manual_seed(0)
        return make_optimizers(config, make_models(config, 3), torch.device("cpu"))

    fused, loop = optimizers(), optimizers()
    assert fused.g.param_groups[0]["fused"] is True and fused.d.param_groups[0]["fused"] is True
    for group in loop.g.param_groups:  # PyTorch's own default on CPU: a loop over the tensors
        group["fused"], group["foreach"] = False, False
    gradients = torch.Generator().manual_seed(0)
    params = [list(o.g.param_groups[0]["params"]) for o in (fused, loop)]
    for _ in range(3):
        for a, b in zip(*params):
            a.grad = torch.randn(a.shape, generator=gradients) * 10.0 ** torch.randint(-9, 1, a.shape, generator=gradients)
            b.grad = a.grad.clone()
        fused.g.step(), loop.g.step()
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_fused_optimizer_computes_the_same_gan_step_within_float_tolerance():
    """The whole joint step, as for channels_last below: the discriminators' fused step rounds its
    last bits differently, so the generator's gradients agree to float tolerance and the losses a step
    later too."""
    config = _gan_config()
    _assert_close(_train(config, 1, fused=True)[1], _train(config, 1, fused=False)[1], rtol=1e-3, atol=1e-6)
    for ours, reference in zip(_train(config, 2, fused=True)[2], _train(config, 2, fused=False)[2]):
        for key in ours:
            assert ours[key] == pytest.approx(reference[key], rel=1e-2, abs=1e-6), key


def test_the_whole_map_bottleneck_computes_the_same_gan_step_within_float_tolerance():
    config = _gan_config()
    assert _train(config, 1, table_layers=True)[0].keys() == _train(config, 1)[0].keys()
    _assert_close(_train(config, 1)[1], _train(config, 1, table_layers=True)[1], rtol=1e-3, atol=1e-6)
    for ours, reference in zip(_train(config, 2)[2], _train(config, 2, table_layers=True)[2]):
        for key in ours:
            assert ours[key] == pytest.approx(reference[key], rel=1e-2, abs=1e-6), key


def test_channels_last_computes_the_same_step_within_float_tolerance():
    """Same gradients from the same weights, and the same losses a step later. Further on, Adam (which
    divides by the gradients' running size) turns rounding in near-zero gradients into lr-sized steps
    and the GAN amplifies them, as it would between two GPUs or two thread counts."""
    config = _gan_config()
    last = dataclasses.replace(config, channels_last=True)
    _assert_close(_train(last, 1, fused=True)[1], _train(config, 1, fused=True)[1], rtol=1e-3, atol=1e-6)
    for ours, reference in zip(_train(last, 2, fused=True)[2], _train(config, 2, fused=True)[2]):
        assert ours.keys() == reference.keys()
        for key in ours:
            assert ours[key] == pytest.approx(reference[key], rel=1e-2, abs=1e-6), key


def test_without_a_terminal_progress_is_a_plain_line_every_log_every_steps(tmp_path, monkeypatch):
    log = tmp_path / "log.txt"
    with log.open("w") as stream:
        monkeypatch.setattr(runs, "console", Console(file=stream, force_terminal=False, width=60))
        with RunLogger(tmp_path / "run", total_steps=20, description="pretrain demo", log_every=5) as logger:
            assert not logger.live
            for step in range(1, 21):
                logger.advance(step, f"loss {1 / step:.4f} 100.0 img/s")
            logger.print("a message longer than the sixty columns of this console is never cut off at all")
    lines = log.read_text().splitlines()
    assert [line.split(" loss")[0] for line in lines[:4]] == [f"pretrain demo: step {s}/20" for s in (5, 10, 15, 20)]
    assert all("elapsed" in line and "left" in line for line in lines[:4])
    assert lines[4].endswith("never cut off at all")


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """(the JSON it wrote, its stdout) of ``tools/bench.py ARGS`` at 32 px, without Fashion-MNIST."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench.py"), *args, "--sizes", "32", "--fashion-mnist", str(tmp_path / "none"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
def test_bench_tool_prints_the_table_and_writes_json(tmp_path):
    report, stdout = _bench(tmp_path, "--quick")
    assert {(r["phase"], r["size"]) for r in report["steps"]} == {("joint", 32), ("reconstruction", 32)}
    assert all(r["ours_img_s"] > 0 and r["plain_img_s"] > 0 and r["gflop_per_step"] > 0 for r in report["steps"])
    assert {r["dataset"] for r in report["loader"]} == {"coco", "folder", "packed"}
    assert {p["size"] for p in report["pack"]} == {32, 128}
    assert "ours/plain" in stdout.splitlines()[-2]


@pytest.mark.slow
def test_bench_profile_names_the_heaviest_ops_of_both_steps(tmp_path):
    report, stdout = _bench(tmp_path, "--profile")
    profile = report["profile"]
    assert profile["size"] == 32 and profile["phase"] == "joint"
    for step in ("ours", "plain"):
        assert profile[step] and all(row["ms_per_step"] >= 0 and row["op"] for row in profile[step])
    assert set(profile["adam_ms"]) == {"loop", "foreach", "fused"}
    assert "Adam update of the" in stdout


def test_bench_times_the_engine_step_with_every_loss_term(capsys):
    """bench's "ours" is the engine's step: its loss weights are the engine's (perceptual, style and
    norm-pix terms included), never a copy; the plain loop names what it lacks."""
    import importlib.util

    from ssl_inpaint.engine.pretrain import loss_weights
    from ssl_inpaint.options.pretrain import PretrainConfig

    spec = importlib.util.spec_from_file_location("bench", REPO / "tools" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.engine_loss_weights is loss_weights and not hasattr(bench, "loss_weights")
    config = PretrainConfig(norm_pix_loss=True, patch_size=4, w_perceptual=0.5, w_style=0.25)
    assert (loss_weights(config).norm_pix_patch, loss_weights(config).perceptual) == (4, 0.5)
    plain = bench.plain_loss_weights(config)
    assert (plain.norm_pix_patch, plain.perceptual, plain.style) == (0, 0.0, 0.0)
    assert "no perceptual, style or norm-pix terms" in capsys.readouterr().out
    bench.plain_loss_weights(PretrainConfig())
    assert capsys.readouterr().out == ""


def _photo(path: Path, size=(640, 480)) -> Path:
    from PIL import Image

    x, y = torch.meshgrid(torch.linspace(0, 1, size[1]), torch.linspace(0, 1, size[0]), indexing="ij")
    pixels = torch.stack([x, y, (x * y).sqrt()], -1).mul(255).byte().numpy()
    Image.fromarray(pixels).save(path, quality=92)
    return path


def test_reduced_decode_keeps_the_crop_covered_and_the_pixels_close(tmp_path):
    from ssl_inpaint.masks import PretextDataset
    from ssl_inpaint.data.sources import FileListSource, read_image
    from ssl_inpaint.masks import create_mask_generator

    jpeg = _photo(tmp_path / "photo.jpg")
    assert read_image(jpeg).size == (640, 480)
    assert read_image(jpeg, min_side=128).size == (320, 240)  # 1/4 would be 120 < 128
    assert read_image(jpeg, min_side=60).size == (80, 60)  # 1/8
    png = tmp_path / "photo.png"
    read_image(jpeg).save(png)
    assert read_image(png, min_side=60).size == (640, 480)  # only JPEGs have DCT scaling

    source = FileListSource([jpeg], "photos")
    masks = create_mask_generator("centre", size=0.5)
    fast, full = (
        PretextDataset(source, 128, masks, torch.zeros(3), seed=0, train=False, reduced_decode=reduced)[0]["image"]
        for reduced in (True, False)
    )
    assert fast.shape == full.shape == (3, 128, 128)
    assert (fast - full).abs().mean() < 0.01  # in [-1, 1]: well under one grey level in 255
    with_objects = PretextDataset(source, 128, masks, torch.zeros(3), seed=0, use_objects=True)
    assert with_objects.decode_side == 0  # object masks are annotated at the file's full size


@pytest.mark.parametrize("size, shape, mode", [(32, (28, 28), "L"), (128, (160, 200), "RGB"), (64, (300, 180), "RGB"), (32, (32, 32), "L")])
@pytest.mark.parametrize("train", [True, False])
def test_the_loaders_fast_crop_is_the_composed_transform_exactly(size, shape, mode, train):
    """Same pixels and the same random draws (the generator's state afterwards) as ``image_transform``."""
    import numpy as np
    from PIL import Image

    from ssl_inpaint.data.transforms import crop_view, image_transform

    rng = np.random.default_rng(0)
    for seed in range(10):
        pixels = rng.integers(0, 256, size=shape + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
        image = Image.fromarray(pixels, mode)
        torch.manual_seed(seed)
        composed, after_composed = image_transform(size, train)(image).as_subclass(torch.Tensor), torch.rand(1)
        torch.manual_seed(seed)
        fast, after_fast = crop_view(image, size, train), torch.rand(1)
        assert type(fast) is torch.Tensor
        assert torch.equal(fast, composed) and torch.equal(after_fast, after_composed)


def test_in_memory_images_are_resized_once_and_give_the_same_items(tiny_data):
    from ssl_inpaint.masks import PretextDataset
    from ssl_inpaint.data.sources import FashionMnistSource, SubsetSource
    from ssl_inpaint.masks import create_mask_generator

    source = SubsetSource(FashionMnistSource(tiny_data / "fashion-mnist", "train"), range(0, 40, 3))
    masks = create_mask_generator("patches", patch_size=4, ratio=0.75)
    kept = PretextDataset(source, 32, masks, torch.zeros(1), seed=5)
    redone = PretextDataset(source, 32, masks, torch.zeros(1), seed=5)
    redone._resized = None  # the plain path: decode and resize every time
    assert kept._resized == {}
    for epoch in (0, 1):
        kept.set_epoch(epoch), redone.set_epoch(epoch)
        for index in range(len(source)):
            a, b = kept[index], redone[index]
            assert all(torch.equal(a[k], b[k]) for k in ("image", "mask", "input"))
    assert len(kept._resized) == len(source)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("mask", ["patches", "centre", "rect"])
def test_an_in_memory_batch_is_its_items_exactly(tiny_data, train, mask):
    """``__getitems__`` (what the DataLoader calls) assembles the batch on whole tensors; every
    sample is the one ``__getitem__`` gives, and the DataLoader's batch is their stack."""
    from torch.utils.data import DataLoader

    from ssl_inpaint.data.sources import FashionMnistSource
    from ssl_inpaint.masks import PretextDataset, create_mask_generator

    source = FashionMnistSource(tiny_data / "fashion-mnist", "train")
    dataset, reference = (
        PretextDataset(source, 32, create_mask_generator(mask), torch.full((1,), 0.25), seed=3, train=train) for _ in range(2)
    )
    reference._resized = None  # one image at a time through PIL, nothing kept
    dataset.set_epoch(2), reference.set_epoch(2)
    indices = [7, 0, 7, 11, 3, 5, 2, 9]
    batch, items = dataset.__getitems__(indices), [reference[i] for i in indices]
    assert sorted(dataset._resized) == [0, 2, 3, 5, 7, 9, 11]  # resized together, kept
    assert len(batch) == len(items)
    for ours, single in zip(batch, items):
        assert ours.keys() == single.keys()
        assert all(torch.equal(ours[k], single[k]) for k in ("image", "mask", "input")), ours["skipped"]
    if train:
        assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(batch, batch[1:]))
    loaded = next(iter(DataLoader(dataset, batch_size=4, sampler=indices)))
    assert torch.equal(loaded["input"], torch.stack([item["input"] for item in items[:4]]))


def test_kept_photos_give_the_decoded_pixels_and_respect_the_budget(tiny_data):
    """--cache-mb keeps resized photos so a later epoch skips decoding: the same samples as decoding
    every time, in every epoch and through the batched path, and no more than the budget kept."""
    from ssl_inpaint.data.sources import CocoSource
    from ssl_inpaint.masks import PretextDataset, create_mask_generator

    source = CocoSource(tiny_data / "coco", "train2017")
    masks = create_mask_generator("rect")
    kept, decoded = (PretextDataset(source, 32, masks, torch.zeros(3), seed=1, cache_mb=mb) for mb in (64, 0))
    assert decoded._resized is None and kept._resized == {}
    indices = list(range(len(source)))
    for epoch in (0, 1):
        kept.set_epoch(epoch), decoded.set_epoch(epoch)
        for ours, reference in zip(kept.__getitems__(indices), [decoded[i] for i in indices]):
            assert all(torch.equal(ours[k], reference[k]) for k in ("image", "mask", "input"))
    assert len(kept._resized) == len(source)
    one_image = next(iter(kept._resized.values())).nbytes
    small = PretextDataset(source, 32, masks, torch.zeros(3), seed=1, cache_mb=1)
    small._cache_bytes = 3 * one_image  # room for three of them
    for index in indices:
        small[index]
    assert len(small._resized) == 3 and small._cached_bytes <= small._cache_bytes
    assert PretextDataset(source, 32, masks, torch.zeros(3), seed=1, cache_mb=64, use_objects=True)._resized is None


def test_persistent_loader_workers_follow_the_epoch(tiny_data):
    """Workers that live across epochs draw each epoch's samples, the ones the main process draws."""
    from torch.utils.data import DataLoader

    from ssl_inpaint.data.sources import CocoSource
    from ssl_inpaint.masks import PretextDataset, create_mask_generator

    dataset = PretextDataset(CocoSource(tiny_data / "coco", "train2017"), 32, create_mask_generator("rect"), torch.zeros(3), seed=1, cache_mb=8)
    order = list(range(8))
    epochs = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=4, sampler=order, num_workers=workers, persistent_workers=workers > 0)
        for epoch in (0, 1, 2):
            dataset.set_epoch(epoch)
            epochs[workers, epoch] = torch.cat([batch["input"] for batch in loader])
    for epoch in (0, 1, 2):
        assert torch.equal(epochs[2, epoch], epochs[0, epoch])
    assert not torch.equal(epochs[0, 1], epochs[0, 2])
