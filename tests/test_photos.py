"""Photos as first-class data (issue 20): CIFAR-10's official files, size-free transfer, the
data-dependent init baseline, the photo pretext levers (random resized crops, encoder widths), and
``ssl compare`` with several baselines and several datasets of one kind. Everything on generated data."""

import hashlib
import json
import subprocess
import sys
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ssl_inpaint.config import resolve_config
from ssl_inpaint.data.cifar10 import BINARY_FILES, Cifar10Source, read_binary_batches
from ssl_inpaint.data.datasets import create_classification_dataset, create_source
from ssl_inpaint.data.transforms import resized_crop_box, scaled_crop
from ssl_inpaint.engine.compare import collect, dataset_labels, find_runs, markdown_table
from ssl_inpaint.options.finetune import FinetuneConfig
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks import RandomPatches
from ssl_inpaint.masks.pretext import PretextDataset
from ssl_inpaint.models import ModelOptions, make_generator
from ssl_inpaint.models.classifier import EncoderClassifier, check_transfer_size, encoder_from_arch, encoder_maps, reestimate_batchnorm
from ssl_inpaint.models.datadep import data_dependent_init, kmeans_filters
from ssl_inpaint.models.unet import UNetEncoder
from tests.helpers import run_ssl

REPO = Path(__file__).resolve().parents[1]



# --- CIFAR-10 in its official files -------------------------------------------------------------------

def write_cifar_binary(root: Path, per_file: int = 20, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The binary version's layout and record format (label byte + R, G, B planes), small."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    truth = {}
    for split, names in BINARY_FILES.items():
        images, labels = [], []
        for name in names:
            pixels = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
            label = (np.arange(per_file) % 10).astype(np.uint8)
            planes = pixels.transpose(0, 3, 1, 2).reshape(per_file, -1)
            (folder / name).write_bytes(np.concatenate([label[:, None], planes], axis=1).tobytes())
            images.append(pixels)
            labels.append(label)
        truth[split] = (np.concatenate(images), np.concatenate(labels).astype(np.int64))
    (folder / "batches.meta.txt").write_text("\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]) + "\n\n")
    return truth


def test_cifar10_binary_files_read_as_written(tmp_path):
    truth = write_cifar_binary(tmp_path)
    for split in ("train", "test"):
        source = create_source("cifar10", tmp_path, split)
        images, labels = truth[split]
        assert len(source) == len(images) and source.in_memory and source.mode == "RGB"
        assert np.array_equal(np.asarray(source.load(3)), images[3])
        assert torch.equal(source.pixels([1, 4]), torch.from_numpy(images[[1, 4]]).permute(0, 3, 1, 2))
        labelled = create_classification_dataset("cifar10", tmp_path / "cifar-10-batches-bin", split)
        assert np.array_equal(labelled.targets, labels) and labelled.classes[0] == "airplane"


def test_cifar10_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="CIFAR-10 files not found"):
        Cifar10Source(tmp_path, "train")
    write_cifar_binary(tmp_path)
    with pytest.raises(UserError, match="split must be 'train' or 'test'"):
        Cifar10Source(tmp_path, "val")
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-5])  # truncated
    with pytest.raises(UserError, match="not a CIFAR-10 binary batch"):
        Cifar10Source(tmp_path, "train")
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(UserError, match="file not found"):
        read_binary_batches(tmp_path / "cifar-10-batches-bin", "test")


class Exploit:
    """Unpickling this runs code: the reader must refuse the file before that."""

    def __reduce__(self):
        return (Path.touch, (Path(EXPLOITED),))


EXPLOITED = ""


def test_cifar10_python_version_unpickles_only_the_official_files(tmp_path, monkeypatch):
    """The python version goes through torchvision's loader, which checks each file's MD5 against the
    published one before unpickling: a crafted pickle is refused unread; files whose MD5 is the one
    expected are read (here the expected sums are the test's own files')."""
    global EXPLOITED
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    EXPLOITED = str(tmp_path / "exploited")
    rng = np.random.default_rng(0)
    entries = {}
    for name in [n for n, _ in CIFAR10.train_list + CIFAR10.test_list]:
        data = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
        entries[name] = data
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": list(range(10)), "evil": Exploit()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["c%d" % i for i in range(10)]}))
    with pytest.raises(UserError, match="official CIFAR-10 python files"):
        Cifar10Source(tmp_path, "train")
    assert not Path(EXPLOITED).exists()
    for name in entries:  # now safe files, and their sums declared as the published ones
        (folder / name).write_bytes(pickle.dumps({"data": entries[name], "labels": list(range(10))}))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    source = Cifar10Source(tmp_path, "test")
    assert len(source) == 10 and source.classes[3] == "c3"
    assert np.array_equal(np.asarray(source.load(2)), entries["test_batch"][2].reshape(3, 32, 32).transpose(1, 2, 0))


# --- size-free transfer --------------------------------------------------------------------------------

def test_pooled_features_of_a_32px_encoder_work_at_64px_and_the_latent_is_refused():
    encoder = UNetEncoder(4, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=24)
    arch = encoder.arch
    check_transfer_size(arch, 32, "latent")
    check_transfer_size(arch, 64, "pooled")
    with pytest.raises(UserError, match="--features latent needs --image-size 32"):
        check_transfer_size(arch, 64, "latent")
    with pytest.raises(UserError, match="multiple of the encoder's total stride 32"):
        check_transfer_size(arch, 48, "multi")
    with pytest.raises(UserError, match="built for that size"):
        check_transfer_size({"arch": "glcic", "image_size": 32}, 64, "pooled")
    rebuilt = encoder_from_arch(arch, 64, 3, "pooled")
    rebuilt.load_state_dict(encoder.state_dict())
    model = EncoderClassifier(rebuilt, 10, "pooled").eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    # at the pretraining size the conv maps are the ones the whole encoder computes
    x = torch.randn(2, 4, 32, 32)
    encoder.eval()
    assert torch.equal(encoder_maps(encoder, x, "pooled")[-2], encoder(x)[-2])


def test_batchnorm_reestimation_for_pooled_features_leaves_the_latent_alone():
    encoder = UNetEncoder(4, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=24)
    latent_bn = encoder.bottleneck[1]
    latent_bn.running_mean.fill_(3.0)
    seen = reestimate_batchnorm(encoder, [torch.randn(4, 3, 64, 64)], "pooled")  # another size than the pretext's
    assert seen == 4 and torch.all(latent_bn.running_mean == 3.0)
    assert not torch.all(encoder.stages[0][1].running_mean == 0)


# --- the data-dependent init -------------------------------------------------------------------------

def test_datadep_init_gives_every_conv_unit_variance_and_a_kmeans_first_layer():
    torch.manual_seed(0)
    encoder = UNetEncoder(4, 32, widths=(16, 16, 32, 32, 64), bottleneck_channels=24)
    images = torch.rand(64, 3, 32, 32) * 2 - 1
    forward = lambda inputs: encoder_maps(encoder, inputs, "pooled")  # noqa: E731
    data_dependent_init(encoder, images, forward, seed=0)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    outputs = {}
    hooks = [c.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o)) for k, c in enumerate(convs)]
    encoder.train()
    forward(torch.cat([images, torch.zeros_like(images[:, :1])], dim=1))
    for h in hooks:
        h.remove()
    assert len(outputs) == len(convs) - 1  # the latent is not on the pooled path
    for out in outputs.values():
        std = out.std(dim=(0, 2, 3))
        assert torch.allclose(std, torch.ones_like(std), atol=1e-3)
    first = convs[0].weight
    assert torch.all(first[:, 3] == 0)  # the hole channel: a classifier feeds it zeros
    filters = first[:, :3].flatten(1)
    cosine = nn.functional.normalize(filters, dim=1) @ nn.functional.normalize(filters, dim=1).T
    assert cosine.fill_diagonal_(0).abs().max() < 0.999  # distinct centroids, not one filter repeated


def test_kmeans_filters_respond_most_to_their_own_cluster():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12)) * 3
    patches = np.concatenate([c + 0.1 * rng.normal(size=(200, 12)) for c in centres])
    filters = kmeans_filters(patches, 4, seed=0)
    responses = (centres - patches.mean(axis=0)) @ filters.T
    assert sorted(responses.argmax(axis=1).tolist()) == [0, 1, 2, 3]  # each cluster has its own filter


def test_datadep_is_for_the_unet_encoder():
    with pytest.raises(UserError, match="--init datadep initialises the staged U-Net encoder"):
        resolve_config(FinetuneConfig, {"data": "x", "init": "datadep", "encoder": "timm:resnet18"}, {})
    assert resolve_config(FinetuneConfig, {"data": "x", "init": "datadep"}, {}).init_label == "datadep"


# --- photo pretext levers: random resized crops, encoder widths -------------------------------------

def test_resized_crop_box_covers_the_asked_area_and_stays_inside():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = resized_crop_box(32, 40, 0.3, generator)
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 40
        assert 0.3 * 32 * 40 * 0.8 <= h * w <= 32 * 40
    x = torch.arange(3 * 32 * 32, dtype=torch.uint8).view(3, 32, 32)
    crop = scaled_crop(x, 16, 0.5, torch.Generator().manual_seed(1))
    assert crop.shape == (3, 16, 16) and crop.dtype == torch.uint8


def test_pretext_random_resized_crops_are_seeded_per_sample_and_differ_from_plain_crops(tiny_data):
    source = create_source("folder", tiny_data / "images", "")
    common = dict(mask_generator=RandomPatches(4, 0.5), fill=torch.zeros(3), seed=0, cache_mb=64)
    plain = PretextDataset(source, 32, **common)
    scaled = PretextDataset(source, 32, crop_scale=0.2, **common)
    again = PretextDataset(source, 32, crop_scale=0.2, **common)
    a, b = scaled.__getitems__([0, 1, 2]), again.__getitems__([0, 1, 2])
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, plain.__getitems__([0, 1, 2])))
    uncached = PretextDataset(source, 32, crop_scale=0.2, **{**common, "cache_mb": 0})  # the one-image path
    assert torch.allclose(uncached[1]["image"], a[1]["image"])
    with pytest.raises(UserError, match="--crop-scale must be in"):
        resolve_config(PretrainConfig, {"data": "x", "crop_scale": 0.0}, {})


def test_encoder_widths_set_the_stages_and_the_size_check():
    options = ModelOptions(image_size=32, widths="8,16,32,64", bottleneck_channels=16, skips="none")
    generator = make_generator(options, 3)
    assert generator.encoder.arch["widths"] == [8, 16, 32, 64]
    assert generator(torch.randn(2, 4, 32, 32)).shape == (2, 3, 32, 32)
    assert [m.shape[-1] for m in generator.encoder(torch.randn(2, 4, 32, 32))] == [16, 8, 4, 2, 1]
    with pytest.raises(UserError, match="multiple of 16"):
        ModelOptions(image_size=40, widths="8,16,32,64").check_model()
    with pytest.raises(UserError, match="--widths must be positive integers"):
        ModelOptions(widths="8,x").check_model()


# --- ssl compare: several baselines, several datasets of one kind -------------------------------------

def write_metrics(folder: Path, init: str, seed: int, value: float, data_root: str, checkpoint: str = "runs/pre") -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "dataset": "folder", "data_root": data_root, "mode": "finetune", "budget": "10-per-class", "metric": "top1",
        "init": init, "seed": seed, "value": value, "checkpoint": checkpoint, "protocol": {"epochs": 30}, "arch": {"arch": "unet"},
    }))


def test_two_folder_datasets_with_the_same_seeds_give_two_rows(tmp_path):
    for root, offset in (("/data/clothing10", 0.0), ("/data/imagewoof10", 0.3)):
        for seed in range(3):
            name = Path(root).name
            write_metrics(tmp_path / f"{name}_pre_s{seed}", "pretrained", seed, 0.5 + offset + 0.01 * seed, root)
            write_metrics(tmp_path / f"{name}_rand_s{seed}", "random", seed, 0.4 + offset, root)
            write_metrics(tmp_path / f"{name}_dd_s{seed}", "datadep", seed, 0.45 + offset, root)
    rows = collect(find_runs([str(tmp_path)]))
    assert [r.dataset for r in rows] == ["folder:clothing10", "folder:imagewoof10"]
    assert rows[0].stats("pretrained")[0] == pytest.approx(0.51) and rows[1].stats("pretrained")[0] == pytest.approx(0.81)
    assert rows[0].difference("random")[0] == pytest.approx(0.11) and rows[0].difference("datadep")[0] == pytest.approx(0.06)
    table = markdown_table(rows)
    assert "pretrained − datadep" in table and "folder:imagewoof10" in table


def test_dataset_labels_are_the_shortest_unambiguous_path_suffix():
    labels = dataset_labels({("folder", "/a/x/cifar10"), ("folder", "/b/y/cifar10"), ("folder", "/c/imagenette"), ("voc", "/v/VOCdevkit")})
    assert labels[("folder", "/a/x/cifar10")] == "folder:x/cifar10" and labels[("folder", "/c/imagenette")] == "folder:imagenette"
    assert labels[("voc", "/v/VOCdevkit")] == "voc"


def test_a_duplicated_run_is_refused_with_both_paths(tmp_path):
    write_metrics(tmp_path / "one/rand_s0", "random", 0, 0.4, "/data/clothing10")
    write_metrics(tmp_path / "two/rand_s0", "random", 0, 0.5, "/data/clothing10")
    with pytest.raises(UserError, match=r"one/rand_s0 and .*two/rand_s0 are the same experiment"):
        collect(find_runs([str(tmp_path)]))


# --- end to end: the photo recipes on a tiny generated CIFAR-10 -----------------------------------------

@pytest.mark.parametrize("dataset,split", [("coco", "train2017"), ("cifar10", "train"), ("folder", "train"), ("voc", "train")])
def test_the_pretext_split_defaults_to_the_datasets_own_training_split_and_the_flag_wins(dataset, split):
    assert resolve_config(PretrainConfig, {"data": "x", "dataset": dataset}, {}).split == split
    assert resolve_config(PretrainConfig, {"data": "x", "dataset": dataset}, {"split": "val"}).split == "val"


@pytest.mark.slow
@pytest.mark.parametrize("pretext_recipe", ["pretrain_cifar10", "pretrain_cifar10_light_decoder"])
def test_photo_recipes_run_end_to_end_on_generated_cifar10(tmp_path, pretext_recipe):
    write_cifar_binary(tmp_path / "cifar", per_file=20)
    data = tmp_path / "cifar"
    out = tmp_path / "runs"
    heldout = pretext_recipe.endswith("light_decoder")  # one recipe's probe scores held-out training photos
    result = run_ssl(
        "pretrain", "--recipe", f"recipes/{pretext_recipe}.yaml", "--dataset", "cifar10", "--data", data,
        "--probe-data", data, "--probe-dataset", "cifar10", "--probe-images", "20", "--max-steps", "2", "--batch-size", "8",
        "--val-images", "4", "--warmup-steps", "1", "--probe-every", "2", "--crop-scale", "0.35", "--sparse-stages", "2",
        "--output-dir", out, "--name", "pre", *(["--probe-heldout"] if heldout else []))
    assert "split: train\n" in (out / "pre/config.yaml").read_text()  # the dataset's own training split, resolved and saved
    expected = "-> held-out train (20)" if heldout else "-> test (20)"
    assert expected in " ".join(result.output.split())
    for init in ("pretrained", "random", "datadep"):
        run_ssl("finetune", "--recipe", "recipes/finetune_cifar10_10_per_class.yaml", "--dataset", "cifar10", "--data", data,
                "--labels-per-class", "2", "--epochs", "1", "--eval-every", "1", "--bn-images", "16", "--seeds", "0,1",
                "--init", init, "--checkpoint", out / "pre", "--output-dir", out / "ft", "--name", "ft")
    run_ssl("finetune", "--recipe", "recipes/linear_cifar10_10_per_class.yaml", "--dataset", "cifar10", "--data", data,
            "--labels-per-class", "2", "--epochs", "2", "--seeds", "0", "--image-size", "64",
            "--init", "pretrained", "--checkpoint", out / "pre", "--output-dir", out / "ft64", "--name", "lin64")
    assert json.loads((out / "ft64/lin64_pretrained_s0/metrics.json").read_text())["protocol"]["image_size"] == 64
    rows = collect(find_runs([str(out / "ft")]))
    assert len(rows) == 1 and all(rows[0].stats(i)[2] == 2 for i in ("pretrained", "random", "datadep"))


def test_budget_curves_plot_each_init_against_labels_per_class(tmp_path):
    from ssl_inpaint.engine.compare import budget_curves, labels_per_class, run_compare

    assert labels_per_class("10-per-class") == 10 and labels_per_class("all") is None and labels_per_class("0.1-fraction") is None
    for budget, base in ((10, 0.3), (100, 0.5)):
        for seed in range(3):
            for init, gain in (("pretrained", 0.05), ("random", 0.0), ("datadep", 0.01)):
                folder = tmp_path / f"b{budget}_{init}_s{seed}"
                write_metrics(folder, init, seed, base + gain + 0.01 * seed, "/data/photos")
                metrics = json.loads((folder / "metrics.json").read_text())
                metrics["budget"] = f"{budget}-per-class"
                (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = collect(find_runs([str(tmp_path)]))
    figure = budget_curves(rows)
    (ax,) = figure.axes
    lines = {container.get_label(): container.lines[0] for container in ax.containers}
    assert set(lines) == {"pretrained (pre)", "random", "datadep"}
    assert list(lines["random"].get_xdata()) == [10, 100]
    assert np.allclose(lines["pretrained (pre)"].get_ydata(), [36.0, 56.0])
    assert ax.get_xlabel() == "labelled images per class" and ax.get_title() == "folder: finetune"
    assert budget_curves([r for r in rows if r.budget == "10-per-class"]) is None  # one budget: no curve
    run_compare([str(tmp_path)], tmp_path / "out/compare.md", tmp_path / "out/tb")
    assert (tmp_path / "out/compare_budgets.png").stat().st_size > 10000 and (tmp_path / "out/compare.png").is_file()


def test_rescaling_convs_to_the_init_norm_changes_no_output():
    from ssl_inpaint.models.classifier import rescale_convs_to_init_norm

    torch.manual_seed(0)
    encoder = UNetEncoder(4, 32, widths=(8, 16, 32), bottleneck_channels=16)
    with torch.no_grad():
        for conv in [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]:
            conv.weight.mul_(5.0)  # what a pretext leaves: deep convs several times the init's norm
    encoder.train()
    encoder(torch.randn(8, 4, 32, 32))  # running statistics of the large weights
    encoder.eval()
    x = torch.randn(4, 4, 32, 32)
    before = [m.clone() for m in encoder(x)]
    assert rescale_convs_to_init_norm(encoder) == 4  # three stages and the latent
    for conv in [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]:
        expected = (conv.weight.numel() / (3 * conv.weight[0].numel())) ** 0.5
        assert abs(conv.weight.norm().item() - expected) < 1e-4 * expected
        fresh = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, bias=False)
        assert abs(fresh.weight.norm().item() / expected - 1) < 0.1  # PyTorch's own init has that norm
    for a, b in zip(before, encoder(x)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_a_protocol_setting_added_later_pairs_with_runs_written_before_it():
    from ssl_inpaint.engine.compare import protocol_defaults, protocol_key
    from ssl_inpaint.transfer_result import TransferResult

    def run(protocol: dict) -> TransferResult:
        return TransferResult("folder", "finetune", "random", "all", 0, "top1", 0.5, protocol=protocol)

    today = protocol_defaults()
    older = {k: v for k, v in today.items() if k != "weight_scale"}
    assert protocol_key(run(today)) == protocol_key(run(older))
    assert protocol_key(run({**today, "weight_scale": "init"})) != protocol_key(run(older))


def test_the_pixel_baseline_scores_the_transfer_subset_with_the_probe_classifiers(tiny_data):
    """tools/pixel_baseline.py: the package's readers, label budget and probe classifiers on raw pixels
    (no copy of them), one table row per budget; a bad dataset is one error line."""
    tool = [sys.executable, str(REPO / "tools" / "pixel_baseline.py"), "--dataset", "fashion_mnist",
            "--data", str(tiny_data / "fashion-mnist"), "--image-size", "16"]
    done = subprocess.run([*tool, "--labels-per-class", "1,0"], capture_output=True, text=True, check=True)
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines()[2:]]
    assert [r[0].strip() for r in rows] == ["1", "all"]
    assert all(0 <= float(cell) <= 100 for r in rows for cell in r[2:])
    bad = subprocess.run([*tool[:-4], "--data", str(tiny_data / "nowhere"), "--image-size", "16"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
