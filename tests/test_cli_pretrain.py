"""End-to-end ``ssl pretrain`` runs on the generated tiny datasets (CPU, a few steps each)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_inpaint.checkpoint import ENCODER_FORMAT, PRETRAIN_FORMAT, load_checkpoint
from ssl_inpaint.errors import UserError
from ssl_inpaint.models import build_encoder
from tests.helpers import run_ssl

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--image-size", "64", "--bottleneck-channels", "64", "--batch-size", "4", "--val-images", "4"]




def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_m1_recipe_end_to_end_writes_checkpoints_encoder_and_tensorboard(tiny_data, tmp_path):
    run_ssl("pretrain", 
        "--recipe", str(REPO / "recipes/pretrain_coco_m1.yaml"), "--data", str(tiny_data / "coco"),
        "--output-dir", str(tmp_path), "--max-steps", "6", "--log-every", "2", "--sample-every", "3",
        "--save-every-epochs", "1", "--num-workers", "2", *SMALL,
    )
    run = tmp_path / "pretrain_coco_m1"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["batch_size"] == 4 and config["w_known"] == 0.9 and config["global_d"] is True

    acc = events(run)
    scalars = set(acc.Tags()["scalars"])
    expected = {
        "loss/g_total", "loss/g_rec_known", "loss/g_rec_hole", "loss/g_adv_global", "loss/g_adv_local",
        "loss/d_global", "loss/d_local", "d/global_real", "d/global_fake", "d/local_real", "d/local_fake",
        "lr/g", "lr/d", "perf/img_per_s", "val/psnr_hole", "val/ssim_hole", "val/l1_hole", "data/skipped_images",
    }
    assert expected <= scalars, expected - scalars
    assert [e.step for e in acc.Scalars("loss/g_total")] == [2, 4, 6]
    assert [e.step for e in acc.Scalars("val/psnr_hole")] == [3, 6]
    assert acc.Scalars("lr/g")[0].value == pytest.approx(2e-3)
    (image_tag,) = acc.Tags()["images"]
    grid = acc.Images(image_tag)[-1]
    assert grid.width == 3 * 64 + 4 * 2  # original | holed | completed columns
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000003.png", "step_0000006.png"]

    ckpt = load_checkpoint(run / "checkpoints/last.pt", PRETRAIN_FORMAT)
    assert ckpt["step"] == 6 and ckpt["global_d"] is not None and ckpt["opt_d"] is not None
    assert (run / "checkpoints/epoch_0001.pt").is_file()
    encoder = load_checkpoint(run / "encoder.pt", ENCODER_FORMAT)
    model = build_encoder(encoder["arch"])
    model.load_state_dict(encoder["state_dict"])  # strict: exactly the encoder's keys
    generator_encoder = {k[len("encoder."):]: v for k, v in ckpt["generator"].items() if k.startswith("encoder.")}
    assert generator_encoder.keys() == encoder["state_dict"].keys()
    for key, value in generator_encoder.items():
        torch.testing.assert_close(value, encoder["state_dict"][key])


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, extra",
    [
        ("pretrain_coco_m2.yaml", []),
        ("pretrain_coco_m3.yaml", []),
        ("pretrain_coco_64px_glcic.yaml", ["--mask", "coco_object", "--phase-scope", "run"]),
        ("pretrain_coco_m1.yaml", ["--no-global-d", "--no-local-d", "--mask", "brush", "--recon-loss", "l1",
                                   "--fill", "mean", "--lr-schedule", "cosine", "--warmup-steps", "2"]),
    ],
    ids=["m2", "m3", "glcic-objects", "reconstruction-only"],
)
def test_other_recipes_run(tiny_data, tmp_path, recipe, extra):
    run_ssl("pretrain", 
        "--recipe", str(REPO / "recipes" / recipe), "--data", str(tiny_data / "coco"), "--output-dir", str(tmp_path),
        "--name", "r", "--max-steps", "5", "--log-every", "1", "--num-workers", "0", *SMALL, *extra,
    )
    acc = events(tmp_path / "r")
    scalars = set(acc.Tags()["scalars"])
    if "--no-global-d" in extra:
        assert not any(s.startswith("loss/d_") for s in scalars) and "loss/g_rec_hole" in scalars
    if recipe == "pretrain_coco_m2.yaml":
        assert "loss/d_local" in scalars and "loss/d_global" not in scalars
    if recipe == "pretrain_coco_64px_glcic.yaml":
        # 5 steps, phases 0.2/0.5/0.3 by each step's start (0, .2, .4, .6, .8 of the run):
        # step 1 reconstruction, steps 2-4 discriminator, step 5 joint
        assert [e.step for e in acc.Scalars("loss/g_total")] == [1, 5]
        assert [e.step for e in acc.Scalars("loss/d_global")] == [2, 3, 4, 5]


@pytest.mark.slow
def test_folder_with_a_corrupt_image_is_counted_not_fatal(tiny_data, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((tiny_data / "images").rglob("*.*"))[:9]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (folder / "a_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    run_ssl("pretrain", "--dataset", "folder", "--data", str(folder), "--output-dir", str(tmp_path / "runs"), "--name", "f",
             "--epochs", "2", "--no-global-d", "--num-workers", "0", "--log-every", "1", *SMALL)
    skipped = events(tmp_path / "runs/f").Scalars("data/skipped_images")
    assert skipped[-1].value >= 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_inpaint", *args], capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_bad_input_is_one_clear_error_line(tiny_data, tmp_path):
    result = run_cli("pretrain", "--dataset", "coco", "--data", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: dataset path does not exist: {tmp_path / 'missing'} (pass --data pointing at your dataset)"
    result = run_cli("pretrain", "--recipe", "recipes/nope.yaml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "recipe file not found" in result.stderr


@pytest.mark.slow
def test_an_existing_run_is_resumed_or_refused_never_overwritten(tiny_data, tmp_path):
    args = ["--dataset", "folder", "--data", str(tiny_data / "images"), "--output-dir", str(tmp_path), "--name", "x",
            "--max-steps", "1", "--no-global-d", "--no-local-d", "--num-workers", "0", *SMALL]
    run_ssl("pretrain", *args)
    before = (tmp_path / "x/checkpoints/last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a trained run and --no-resume"):
        run_ssl("pretrain", *args, "--no-resume")
    run_ssl("pretrain", *args)  # finished already: resuming does no step and rewrites nothing
    assert (tmp_path / "x/checkpoints/last.pt").read_bytes() == before
    with pytest.raises(UserError, match="cannot resume .*--image-size 64 -> 96"):
        run_ssl("pretrain", *args, "--image-size", "96")
    assert (tmp_path / "x/checkpoints/last.pt").read_bytes() == before


@pytest.mark.slow
def test_bf16_accumulation_channels_last_run(tiny_data, tmp_path):
    run_ssl("pretrain", "--dataset", "coco", "--data", str(tiny_data / "coco"), "--output-dir", str(tmp_path), "--name", "amp",
             "--max-steps", "2", "--accumulate", "2", "--precision", "bf16", "--channels-last", "--num-workers", "0",
             "--log-every", "1", *SMALL)
    acc = events(tmp_path / "amp")
    assert [e.step for e in acc.Scalars("loss/g_total")] == [1, 2]
    assert {"config/text_summary", "global_batch/text_summary"} <= set(acc.Tags()["tensors"])
    assert load_checkpoint(tmp_path / "amp/checkpoints/last.pt", PRETRAIN_FORMAT)["global_batch"] == 8


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    import ssl_inpaint.gan_step as engine

    real_loss, calls = engine.generator_loss, []

    def poisoned(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(engine, "generator_loss", poisoned)
    with pytest.raises(UserError, match="non-finite loss at step 3.*last good checkpoint is kept"):
        run_ssl("pretrain", "--dataset", "coco", "--data", str(tiny_data / "coco"), "--output-dir", str(tmp_path), "--name", "nan",
                 "--max-steps", "5", "--save-every-steps", "1", "--num-workers", "0", *SMALL)
    assert load_checkpoint(tmp_path / "nan/checkpoints/last.pt", PRETRAIN_FORMAT)["step"] == 2
