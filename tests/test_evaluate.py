"""``ssl evaluate``: the model and the classical baselines on the same images and seeded holes."""

import csv
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_inpaint.errors import UserError
from tests.helpers import run_ssl

pytest.importorskip("cv2")
pytest.importorskip("skimage")




def common(tiny_data, tiny_generator, tmp_path):
    return [
        "--checkpoint", str(tiny_generator), "--dataset", "folder", "--data", str(tiny_data / "images"),
        "--output-dir", str(tmp_path), "--num-workers", "0", "--batch-size", "4",
    ]


@pytest.mark.slow
def test_evaluate_writes_json_markdown_csv_and_tensorboard(tiny_data, tiny_generator, tmp_path):
    run_ssl("evaluate", *common(tiny_data, tiny_generator, tmp_path), "--mask", "rect", "--rect-min", "0.25", "--rect-max", "0.4",
             "--per-image-csv", "--show-cases", "2", "--name", "ev")
    run = tmp_path / "ev"
    results = json.loads((run / "results.json").read_text())
    methods = ["model", "telea", "ns", "biharmonic", "mean"]
    assert list(results["mean"]) == methods and results["images"] == 14 and results["mask"] == "rect"
    for method in methods:
        values = results["mean"][method]
        assert set(values) == {"psnr_image", "psnr_hole", "ssim_image", "ssim_hole", "l1_image", "l1_hole"}
        # Known pixels are exact for every method, so the image-level error is below the hole-level one.
        assert values["psnr_image"] > values["psnr_hole"] and values["l1_image"] < values["l1_hole"]
    table = (run / "results.md").read_text()
    assert "| telea |" in table and "psnr hole ↑" in table
    with (run / "per_image.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 14 * len(methods) and rows[0]["image"].endswith(".jpg")
    assert (run / "worst.png").is_file() and (run / "best.png").is_file()
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert any(tag.startswith("cases/worst") for tag in events.Tags()["images"])
    assert "eval/model/psnr_hole" in events.Tags()["scalars"]


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_holes(tiny_data, tiny_generator, tmp_path):
    args = [*common(tiny_data, tiny_generator, tmp_path), "--mask", "rect", "--baselines", "mean", "--max-images", "6"]
    run_ssl("evaluate", *args, "--name", "a", "--seed", "3")
    run_ssl("evaluate", *args, "--name", "b", "--seed", "3")
    run_ssl("evaluate", *args, "--name", "c", "--seed", "4")
    means = {n: json.loads((tmp_path / n / "results.json").read_text())["mean"] for n in "abc"}
    assert means["a"] == means["b"]
    assert means["a"]["mean"] != means["c"]["mean"]


@pytest.mark.slow
def test_bad_options_are_clear_errors(tiny_data, tiny_generator, tmp_path):
    args = common(tiny_data, tiny_generator, tmp_path)
    with pytest.raises(UserError, match="unknown baseline 'lama'"):
        run_ssl("evaluate", *args, "--baselines", "telea,lama")
    with pytest.raises(UserError, match="pass --checkpoint"):
        run_ssl("evaluate", "--data", str(tiny_data / "images"))
    with pytest.raises(UserError, match="dataset path does not exist"):
        run_ssl("evaluate", *args, "--data", str(tmp_path / "nowhere"))
