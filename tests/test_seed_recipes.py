"""Every seed recipe runs two steps on the tiny generated data through the CLI (issue 7), and a
non-default generator's encoder transfers with ``ssl finetune``."""

import json
from pathlib import Path

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_inpaint.checkpoint import ENCODER_FORMAT, PRETRAIN_FORMAT, load_checkpoint
from ssl_inpaint.models import build_encoder
from tests.helpers import run_ssl

REPO = Path(__file__).resolve().parents[1]
TINY = ["--max-steps", "2", "--batch-size", "2", "--val-images", "2", "--num-workers", "0", "--log-every", "1"]




def scalars_and_images(run: Path) -> tuple[set[str], set[str]]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags()["images"])


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A torchvision vgg16 state dict with random weights: the real file is the user's to provide."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pt"
    torch.save(make_layers(cfgs["D"]).state_dict(prefix="features."), path)  # vgg16().features' layers
    return path


# Overrides that keep each model tiny; the schedules' stages are both reached within two steps.
SEED_RUNS = {
    "seed000_glcic_completion.yaml": (
        ["--image-size", "32", "--phase-scope", "run", "--phase-fractions", "0,0.5,0.5"],
        {"loss/d_global", "loss/g_adv_global", "loss/g_rec_hole"},
    ),
    "seed001_approxnet_attention.yaml": (
        ["--image-size", "32", "--approx-hidden", "16"],
        {"loss/g_rec_hole", "loss/d_global", "val/ssim_image", "val/ssim_image_holed_input", "val/ssim_image_approxnet"},
    ),
    "seed002_pix2pix_lower_half.yaml": (["--image-size", "32"], {"loss/d_global", "loss/g_adv_global"}),
    "seed004_perceptual_unet.yaml": (["--image-size", "32"], {"loss/g_perceptual", "loss/g_style", "loss/g_adv_global"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SEED_RUNS), ids=lambda r: r.split("_")[0])
def test_seed_recipe_runs_two_steps(tiny_data, tmp_path, vgg_file, recipe):
    extra, expected = SEED_RUNS[recipe]
    run_ssl("pretrain", "--recipe", str(REPO / "recipes" / recipe), "--data", str(tiny_data / "images"),
           "--output-dir", str(tmp_path), "--base-channels", "8", "--vgg-weights", str(vgg_file), *TINY, *extra)
    run = tmp_path / Path(recipe).stem
    scalars, images = scalars_and_images(run)
    assert expected <= scalars, expected - scalars
    if "approxnet" in recipe:
        assert "val/original|hole_attention" in images
    if "perceptual" in recipe:  # the VGG16 discriminator's trunk is the user's file, untouched by training
        trunk = {k[len("trunk."):]: v for k, v in load_checkpoint(run / "checkpoints/last.pt", PRETRAIN_FORMAT)["global_d"].items() if k.startswith("trunk.")}
        given = torch.load(vgg_file, weights_only=True)
        assert trunk and all(torch.equal(v, given[f"features.{k}"]) for k, v in trunk.items())
    payload = load_checkpoint(run / "encoder.pt", ENCODER_FORMAT)
    build_encoder(payload["arch"]).load_state_dict(payload["state_dict"])  # strict round trip


@pytest.mark.slow
def test_pixelcnn_recipe_runs_two_steps(tiny_data, tmp_path):
    run_ssl("pixelcnn", "--recipe", str(REPO / "recipes/seed002_pixelcnnpp_lower_half.yaml"), "--data",
           str(tiny_data / "images"), "--output-dir", str(tmp_path), "--image-size", "8", "--filters", "8",
           "--blocks", "1", "--components", "2", "--sample-images", "1", *TINY)
    run = tmp_path / "seed002_pixelcnnpp_lower_half"
    scalars, images = scalars_and_images(run)
    assert {"loss/bits_per_dim", "val/bits_per_dim"} <= scalars
    assert images == {"val/original|upper_half|sampled"}
    assert (run / "checkpoints/last.pt").is_file() and (run / "samples/step_0000002.png").is_file()


@pytest.mark.slow
def test_a_non_default_encoder_transfers_with_finetune(tiny_data, tmp_path):
    run_ssl("pretrain", "--recipe", str(REPO / "recipes/seed002_pix2pix_lower_half.yaml"), "--data",
           str(tiny_data / "images"), "--output-dir", str(tmp_path), "--name", "p2p", "--image-size", "32",
           "--base-channels", "8", *TINY)
    run_ssl("finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--year", "2007",
           "--train-split", "trainval", "--test-split", "test", "--image-size", "32", "--init", "pretrained",
           "--checkpoint", str(tmp_path / "p2p"), "--epochs", "1", "--batch-size", "8", "--labels-per-class", "1",
           "--seeds", "0", "--num-workers", "0", "--output-dir", str(tmp_path), "--name", "ft")
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("ft*/metrics.json")]
    assert result["init"] == "pretrained" and result["arch"]["arch"] == "pix2pix_unet"  # the seed-002 encoder, not a U-Net
