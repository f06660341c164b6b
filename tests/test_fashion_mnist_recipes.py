"""End to end on the tiny Fashion-MNIST-layout files: the quickstart's recipes (the patch-masked
pretext with its online probe, then the transfer protocols for both inits) for a few steps each."""

from pathlib import Path

import pytest
import yaml

from tests.helpers import run_ssl
from tests.test_cli_pretrain import events

REPO = Path(__file__).resolve().parents[1]
TINY_PRETEXT = ["--max-steps", "4", "--batch-size", "8", "--val-images", "8", "--num-workers", "0", "--sample-every", "4"]


@pytest.mark.slow
def test_quickstart_recipes_end_to_end_with_the_probe(tiny_data, tmp_path):
    data = str(tiny_data / "fashion-mnist")
    run_ssl("pretrain", 
        "--recipe", str(REPO / "recipes/pretrain_fashion_mnist.yaml"), "--data", data, "--output-dir", str(tmp_path),
        "--name", "pre", "--probe-every", "2", "--probe-images", "50", *TINY_PRETEXT,
    )
    run = tmp_path / "pre"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["mask"] == "patches" and config["w_known"] == 0 and config["probe_every"] == 2
    acc = events(run)
    knn = acc.Scalars("probe/knn_top1")
    assert [e.step for e in knn] == [0, 2, 4]
    assert all(0 <= e.value <= 1 for e in knn)
    # The tiny classes are bars at different places: even a random encoder's features tell most apart.
    assert knn[0].value > 0.3 and acc.Scalars("probe/linear_top1")[0].value > 0.3

    for recipe in ("finetune_fashion_mnist_10_per_class.yaml", "linear_fashion_mnist_10_per_class.yaml"):
        for init in ("pretrained", "random"):
            run_ssl(
                "finetune", "--recipe", str(REPO / "recipes" / recipe), "--data", data, "--init", init,
                "--checkpoint", str(run), "--seeds", "0", "--epochs", "3", "--eval-every", "3", "--num-workers", "0",
                "--labels-per-class", "3", "--bn-images", "40", "--output-dir", str(tmp_path / "ft"),
            )
    import json

    metrics = json.loads((tmp_path / "ft/linear_fashion_mnist_10_per_class_random_s0/metrics.json").read_text())
    assert metrics["protocol"]["features"] == "pooled" and metrics["arch"]["bottleneck_channels"] == 512
    assert metrics["run_prefix"] == "linear_fashion_mnist_10_per_class" and "seed" not in metrics["protocol"]
    result = run_ssl("compare", str(tmp_path / "ft"), "--output", str(tmp_path / "compare.md"))
    table = (tmp_path / "compare.md").read_text()
    assert "| finetune |" in table and "| linear |" in table and "pre" in table
    assert "probe/linear_top1" in set(acc.Tags()["scalars"]) and "fashion_mnist" in result.output


@pytest.mark.slow
def test_probe_is_off_without_labels_and_says_so(tiny_data, tmp_path):
    result = run_ssl(
        "pretrain", "--dataset", "folder", "--data", str(tiny_data / "images"), "--image-size", "32",
        "--bottleneck-channels", "16", "--batch-size", "2", "--val-images", "2", "--max-steps", "1",
        "--no-global-d", "--no-local-d", "--num-workers", "0", "--output-dir", str(tmp_path), "--name", "nolabels",
    )
    assert "representation probe off" in result.output
    assert not any(t.startswith("probe/") for t in events(tmp_path / "nolabels").Tags()["scalars"])


@pytest.mark.slow
def test_probe_data_gives_labels_to_an_unlabelled_pretext(tiny_data, tmp_path):
    run_ssl(
        "pretrain", "--dataset", "folder", "--data", str(tiny_data / "images"), "--image-size", "32",
        "--bottleneck-channels", "16", "--batch-size", "2", "--val-images", "2", "--max-steps", "2",
        "--no-global-d", "--no-local-d", "--num-workers", "0", "--output-dir", str(tmp_path), "--name", "withprobe",
        "--probe-data", str(tiny_data / "VOCdevkit"), "--probe-dataset", "voc", "--year", "2007", "--probe-images", "20",
        "--probe-every", "1", "--probe-bn-stats", "clean",
    )
    acc = events(tmp_path / "withprobe")
    assert [e.step for e in acc.Scalars("probe/knn_mAP")] == [0, 1, 2]  # VOC is multi-label: mAP
    assert all(0 <= e.value <= 1 for e in acc.Scalars("probe/linear_mAP"))


def test_probe_images_must_have_the_pretext_channels(tiny_data, tmp_path):
    from ssl_inpaint.config import resolve_config
    from ssl_inpaint.options.pretrain import PretrainConfig
    from ssl_inpaint.probe import make_probe
    from ssl_inpaint.errors import UserError

    config = resolve_config(PretrainConfig, {
        "dataset": "folder", "data": str(tiny_data / "images"), "probe_data": str(tiny_data / "fashion-mnist"),
        "probe_dataset": "fashion_mnist", "image_size": 32, "probe_images": 20, "local_d": False,
    }, {})
    with pytest.raises(UserError, match="1-channel images but the pretext sees 3"):
        make_probe(config, config, config.image_size, image_channels=3)
