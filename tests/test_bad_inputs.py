"""Bad inputs and faults against every command (issue 13): each ends with exit status 2 and one clear
``error:`` line naming the problem and the fix, no traceback, and every file that existed before is
unchanged. Run in-process through ``ssl_inpaint.cli.main``, the function the ``ssl`` script calls."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_inpaint.cli import main
from ssl_inpaint.runs import run_folder_lock

PRETRAIN = ["pretrain", "--image-size", "32", "--bottleneck-channels", "16", "--batch-size", "2", "--val-images", "2",
            "--max-steps", "1", "--mask", "rect", "--rect-min", "0.25", "--rect-max", "0.5", "--no-global-d", "--no-local-d",
            "--num-workers", "0"]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """(exit status, stderr) of ``ssl ARGS``."""
    monkeypatch.setattr(sys, "argv", ["ssl", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capsys.readouterr().err


def snapshot(*folders: Path) -> dict[str, str]:
    """Hash of every file under ``folders`` (the run-folder lock file aside: it holds the last PID)."""
    files = {}
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != ".lock"):
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def assert_refused(monkeypatch, capsys, expected: str, *args: str, keep: tuple[Path, ...] = ()) -> str:
    before = snapshot(*keep)
    code, err = run_cli(monkeypatch, capsys, *args)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert "Traceback" not in err, err
    assert last.startswith("error: ") and expected in last, err
    assert "weights_only=False" not in err
    for path, digest in before.items():
        assert Path(path).exists() and snapshot_file(Path(path)) == digest, f"{path} changed"
    added = sorted(set(snapshot(*keep)) - set(before))
    assert not added, f"a refusal wrote {added}"
    return last


def snapshot_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """A finished one-step pretrain run (the folder holding it is the --output-dir)."""
    out = tmp_path_factory.mktemp("trained")
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "ssl_inpaint", *PRETRAIN, "--dataset", "folder", "--data", str(tiny_data / "images"),
         "--output-dir", str(out), "--name", "run"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    return out


def images_arg(tiny_data: Path) -> list[str]:
    return ["--dataset", "folder", "--data", str(tiny_data / "images")]


# --- ssl pretrain: options checked at the boundary -------------------------------------------------

@pytest.mark.parametrize("flags, expected", [
    (["--val-images", "0"], "--val-images must be in [1, 4096], got 0"),
    (["--rect-min", "0.5", "--rect-max", "0.3"], "--rect-min (0.5) must not exceed --rect-max (0.3)"),
    (["--num-workers", "-2"], "--num-workers"),
    (["--lr-g", "nan"], "--lr-g must be a finite number"),
    (["--lr-g", "inf"], "--lr-g must be a finite number"),
    (["--lr-g", "-0.1"], "--lr-g must be in (0, 10], got -0.1"),
    (["--beta1", "1.0"], "--beta1 must be in [0, 1), got 1"),
    (["--batch-size", "1"], "--batch-size must be in [2, 65536], got 1"),
    (["--mask", "centre", "--centre-size", "0"], "--centre-size must be in (0, 1), got 0"),
    (["--mask", "centre", "--centre-size", "1.5"], "--centre-size must be in (0, 1), got 1.5"),
    (["--mask", "patches", "--mask-ratio", "1.0"], "--mask-ratio must be in (0, 1), got 1"),
    (["--mask", "region", "--region-min", "0.5", "--region-max", "0.2"], "--region-min (0.5) must not exceed"),
    (["--mask", "gaussian_rect", "--gauss-std", "-1"], "--gauss-std must be in [0, 1], got -1"),
    (["--mask", "brush", "--brush-strokes", "0"], "--brush-strokes must be in [1, 1000], got 0"),
    (["--log-every", "0"], "--log-every must be >= 1, got 0"),
    (["--name", "../escape"], "must be a plain folder name"),
    (["--name", "a/b"], "must be a plain folder name"),
    (["--image-size", "48"], "--image-size must be a positive multiple of 32"),
])
def test_pretrain_options_out_of_their_domain(tiny_data, tmp_path, monkeypatch, capsys, flags, expected):
    assert_refused(monkeypatch, capsys, expected, *PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path, *flags)
    assert not (tmp_path.parent / "escape").exists()


def test_image_size_32_with_the_default_local_discriminator_says_where_the_size_comes_from(tiny_data, tmp_path, monkeypatch, capsys):
    last = assert_refused(monkeypatch, capsys, "defaults to half of --image-size 32", "pretrain", *images_arg(tiny_data),
                          "--output-dir", tmp_path, "--image-size", "32")
    assert "--local-size 32" in last and "--no-local-d" in last


# --- ssl pretrain: data that cannot be read --------------------------------------------------------

def test_missing_data_and_recipes(tmp_path, monkeypatch, capsys):
    assert_refused(monkeypatch, capsys, "dataset path does not exist", *PRETRAIN, "--dataset", "folder", "--data", tmp_path / "nope",
                   "--output-dir", tmp_path)
    assert_refused(monkeypatch, capsys, "recipe file not found", "pretrain", "--recipe", tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert_refused(monkeypatch, capsys, "must be a mapping", "pretrain", "--recipe", tmp_path / "list.yaml")
    (tmp_path / "unknown.yaml").write_text("learning_rate: 0.1\n")
    assert_refused(monkeypatch, capsys, "unknown recipe key(s) learning_rate", "pretrain", "--recipe", tmp_path / "unknown.yaml")
    (tmp_path / "null.yaml").write_text("lr_g:\nbatch_size: 4\n")
    assert_refused(monkeypatch, capsys, "option 'lr_g' has no value (null)", "pretrain", "--recipe", tmp_path / "null.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert_refused(monkeypatch, capsys, "is not a text file", "pretrain", "--recipe", tmp_path / "binary.yaml")


IMAGE = {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}
ANNOTATION = {"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 20.0, "bbox": [1, 1, 5, 4],
              "segmentation": [[1, 1, 6, 1, 6, 5, 1, 5]]}


def coco_file(images: list, annotations: list) -> str:
    return json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})


@pytest.mark.parametrize("content, expected", [
    ("[1, 2, 3]", "is not a COCO instances file"),
    ("{not json", "is not a COCO instances file"),
    ('{"images": 5}', "is not a COCO instances file"),
    (coco_file([{k: v for k, v in IMAGE.items() if k != "file_name"}], []), "image 1 has no usable file_name (None"),
    (coco_file([{**IMAGE, "file_name": "../../etc/passwd"}], []), "image 1 has no usable file_name"),
    (coco_file([{**IMAGE, "width": "40"}], []), "needs positive integer width and height"),
    (coco_file([IMAGE], [{**ANNOTATION, "area": "big"}]), "annotation 7 has a non-numeric area ('big')"),
    (coco_file([IMAGE], [{**ANNOTATION, "segmentation": "a polygon"}]), "annotation 7 has a segmentation that is neither"),
])
def test_coco_annotation_files_that_are_not_coco(tiny_data, tmp_path, monkeypatch, capsys, content, expected):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    (root / "annotations" / "instances_train2017.json").write_text(content)
    assert_refused(monkeypatch, capsys, expected, *PRETRAIN, "--dataset", "coco", "--data", root, "--output-dir", tmp_path / "runs",
                   keep=(root,))


def _fashion_files(folder: Path, train_images: bytes | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = b"\x00\x00\x08\x03" + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()
        labels = b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + (np.arange(n) % 10).astype(np.uint8).tobytes()
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    if train_images is not None:
        (folder / "train-images-idx3-ubyte.gz").write_bytes(train_images)


@pytest.mark.slow
def test_corrupt_fashion_mnist_is_refused_and_a_good_replacement_is_used(tmp_path, monkeypatch, capsys):
    data = tmp_path / "fmnist"
    _fashion_files(data, train_images=b"this is not gzip")
    args = [*PRETRAIN, "--dataset", "fashion_mnist", "--data", data, "--split", "train", "--mask", "patches"]
    assert_refused(monkeypatch, capsys, "is not a complete gzip file", *args, "--output-dir", tmp_path / "a", "--name", "a")
    truncated = gzip.compress(gzip.decompress((_fashion_files(tmp_path / "good") or (tmp_path / "good" / "train-images-idx3-ubyte.gz").read_bytes()))[:5000])
    (data / "train-images-idx3-ubyte.gz").write_bytes(truncated)
    assert_refused(monkeypatch, capsys, "is truncated", *args, "--output-dir", tmp_path / "b", "--name", "b")
    # The good files replace the bad ones: the cache unzipped from the bad ones is refreshed.
    (data / "train-images-idx3-ubyte.gz").write_bytes((tmp_path / "good" / "train-images-idx3-ubyte.gz").read_bytes())
    code, err = run_cli(monkeypatch, capsys, *args, "--output-dir", tmp_path / "c", "--name", "c", "--val-images", "4")
    assert code == 0, err


def test_sixteen_bit_and_float_images_are_decoded_exactly_or_refused(tmp_path):
    from ssl_inpaint.data.sources import read_image

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    grey = np.asarray(read_image(tmp_path / "grey16.png", "L"))
    assert np.array_equal(grey, (ramp >> 8).astype(np.uint8))  # not clipped to white
    Image.fromarray(ramp.astype(np.float32) / 65535).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match="unknown range"):
        read_image(tmp_path / "float.tif", "L")


@pytest.mark.slow
def test_unreadable_validation_candidates_are_passed_over(tiny_data, tmp_path, monkeypatch, capsys):
    """Two bad files among good ones never make the fixed validation batch, whatever the order."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(folder / f"ok_{i}.png")
    for i in range(2):
        (folder / f"bad_{i}.png").write_bytes(b"\x89PNG broken")
    code, err = run_cli(monkeypatch, capsys, *PRETRAIN, "--dataset", "folder", "--data", folder, "--output-dir", tmp_path / "runs",
                        "--val-images", "4")
    assert code == 0, err


# --- ssl pretrain: run folders -----------------------------------------------------------------------

def test_output_dir_that_is_a_file(tiny_data, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    assert_refused(monkeypatch, capsys, "cannot use", *PRETRAIN, *images_arg(tiny_data), "--output-dir", blocker, keep=(tmp_path,))


def test_a_second_writer_is_refused_with_the_first_ones_pid(tiny_data, trained, monkeypatch, capsys):
    with run_folder_lock(trained / "run", "pretrain"):
        last = assert_refused(monkeypatch, capsys, "is in use by another process (PID", *PRETRAIN, *images_arg(tiny_data),
                              "--output-dir", trained, "--name", "run", "--max-steps", "2", keep=(trained,))
    import os

    assert f"PID {os.getpid()}" in last


@pytest.mark.parametrize("flags, key", [
    (["--lr-g", "0.01"], "--lr-g 0.002 -> 0.01"),
    (["--mask", "centre"], "--mask 'rect' -> 'centre'"),
    (["--w-hole", "0.5"], "--w-hole"),
    (["--seed", "3"], "--seed 0 -> 3"),
])
def test_resume_refuses_changes_it_would_ignore_and_names_them(tiny_data, trained, monkeypatch, capsys, flags, key):
    assert_refused(monkeypatch, capsys, key, *PRETRAIN, *images_arg(tiny_data), "--output-dir", trained, "--name", "run",
                   "--max-steps", "2", *flags, keep=(trained,))


def test_resume_refuses_other_data(tiny_data, trained, tmp_path, monkeypatch, capsys):
    other = tmp_path / "copy"
    other.mkdir()
    for path in (tiny_data / "images").rglob("*.jpg"):
        (other / path.name).write_bytes(path.read_bytes())
    assert_refused(monkeypatch, capsys, "--data", *PRETRAIN, "--dataset", "folder", "--data", other, "--output-dir", trained,
                   "--name", "run", "--max-steps", "2", keep=(trained,))


@pytest.mark.slow
def test_a_folder_run_resumes_with_another_split_which_it_never_read(tiny_data, tmp_path, monkeypatch, capsys):
    args = [*PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path, "--name", "r"]
    assert run_cli(monkeypatch, capsys, *args, "--split", "train2017")[0] == 0  # as a run saved before the kind's own default
    code, err = run_cli(monkeypatch, capsys, *args[:-2], "--name", "r", "--max-steps", "2")
    assert code == 0, err
    import yaml

    assert {"step": 1, "key": "split", "old": "train2017", "new": "train"} in yaml.safe_load((tmp_path / "r" / "resume_changes.yaml").read_text())


@pytest.mark.slow
def test_a_kind_that_reads_its_split_refuses_another_on_resume(tiny_data, tmp_path, monkeypatch, capsys):
    from ssl_inpaint.data import DATASETS

    assert DATASETS.get("coco").reads_split and not DATASETS.get("folder").reads_split
    args = [*PRETRAIN, "--dataset", "coco", "--data", tiny_data / "coco", "--output-dir", tmp_path, "--name", "r"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    assert_refused(monkeypatch, capsys, "--split 'train2017' -> 'val2017'", *args[:-2], "--name", "r", "--max-steps", "2",
                   "--split", "val2017", keep=(tmp_path,))


@pytest.mark.slow
def test_resume_records_the_changes_it_accepts(tiny_data, tmp_path, monkeypatch, capsys):
    args = [*PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path, "--name", "r"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    code, err = run_cli(monkeypatch, capsys, *args[:-2], "--name", "r", "--max-steps", "2", "--log-every", "1")
    assert code == 0, err
    import yaml

    changes = yaml.safe_load((tmp_path / "r" / "resume_changes.yaml").read_text())
    assert {"step": 1, "key": "max_steps", "old": 1, "new": 2} in changes
    assert {"step": 1, "key": "log_every", "old": 10, "new": 1} in changes


@pytest.mark.slow
def test_nan_stop_before_any_checkpoint_says_so(tiny_data, tmp_path, monkeypatch, capsys):
    import ssl_inpaint.gan_step as engine

    real = engine.generator_loss
    monkeypatch.setattr(engine, "generator_loss", lambda *a, **k: {**real(*a, **k), "total": torch.tensor(float("nan"), requires_grad=True)})
    last = assert_refused(monkeypatch, capsys, "non-finite loss at step 1", *PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path)
    assert "no checkpoint had been saved yet" in last


# --- checkpoints and weights files never unpickled ---------------------------------------------------

class Payload:
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_pickled_objects_are_refused_everywhere(tiny_data, trained, tmp_path, monkeypatch, capsys):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "ssl_inpaint/encoder", "x": Payload()}))
    last = assert_refused(monkeypatch, capsys, "not a PyTorch file of tensors", "finetune", "--dataset", "voc",
                          "--data", tiny_data / "VOCdevkit", "--image-size", "32", "--checkpoint", evil, "--output-dir", tmp_path / "ft")
    assert "must never run" not in last
    assert_refused(monkeypatch, capsys, "VGG16 weights file", *PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path / "runs",
                   "--w-perceptual", "1", "--vgg-weights", evil)


# --- ssl finetune ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, expected", [
    (["--checkpoint", "/nonexistent/run"], "no encoder at"),
    (["--name", "../x"], "must be a plain folder name"),
    (["--lr", "nan"], "--lr must be a finite number"),
])
def test_finetune_bad_options(tiny_data, trained, tmp_path, monkeypatch, capsys, flags, expected):
    base = ["finetune", "--dataset", "voc", "--data", tiny_data / "VOCdevkit", "--image-size", "32", "--checkpoint", trained / "run",
            "--output-dir", tmp_path, "--epochs", "1", "--labels-per-class", "2"]
    assert_refused(monkeypatch, capsys, expected, *base, *flags, keep=(trained,))


# --- ssl evaluate ------------------------------------------------------------------------------------------

def test_evaluate_refuses_degenerate_holes_and_overwriting(tiny_data, trained, tmp_path, monkeypatch, capsys):
    base = ["evaluate", "--checkpoint", trained / "run", "--dataset", "folder", "--data", tiny_data / "images",
            "--output-dir", tmp_path, "--name", "e", "--baselines", "mean", "--num-workers", "0"]
    assert_refused(monkeypatch, capsys, "--centre-size must be in (0, 1), got 0", *base, "--mask", "centre", "--centre-size", "0")
    assert_refused(monkeypatch, capsys, "--batch-size must be in [1, 65536], got 0", *base, "--batch-size", "0")
    assert run_cli(monkeypatch, capsys, *base)[0] == 0
    assert_refused(monkeypatch, capsys, "holds the results of an earlier evaluation", *base, keep=(tmp_path / "e",))


def test_evaluate_scores_each_readable_file_once_under_its_own_name(trained, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 50 * i, np.uint8)).save(folder / f"{i}_ok.png")
    (folder / "2_truncated.png").write_bytes((folder / "2_ok.png").read_bytes()[:40])
    code, err = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", trained / "run", "--dataset", "folder", "--data", folder,
                        "--output-dir", tmp_path, "--name", "e", "--baselines", "mean", "--num-workers", "0", "--per-image-csv")
    assert code == 0, err
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["images"] == 4 and results["skipped_unreadable"] == 1
    rows = (tmp_path / "e" / "per_image.csv").read_text().splitlines()[1:]
    named = [row.split(",")[1] for row in rows if row.split(",")[2] == "model"]
    assert sorted(Path(n).name for n in named) == [f"{i}_ok.png" for i in range(4)]


# --- ssl inpaint ---------------------------------------------------------------------------------------------

def test_inpaint_refuses_missing_or_whole_image_holes_and_existing_outputs(trained, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "p.png")
    base = ["inpaint", tmp_path / "p.png", "--checkpoint", trained / "run"]
    assert_refused(monkeypatch, capsys, "no hole given", *base, "-o", tmp_path / "o.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "white.png")
    assert_refused(monkeypatch, capsys, "covers the whole image", *base, "--mask", tmp_path / "white.png", "-o", tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
    (tmp_path / "mine.png").write_bytes(b"precious")
    assert_refused(monkeypatch, capsys, "already exist", *base, "--box", "5,5,10,10", "-o", tmp_path / "mine.png", keep=(tmp_path,))
    assert run_cli(monkeypatch, capsys, *base, "--box", "5,5,10,10", "-o", tmp_path / "mine.png", "--overwrite")[0] == 0


def test_inpaint_gives_inputs_with_one_stem_distinct_outputs(trained, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 10, np.uint8)).save(folder / "x.jpg")
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(folder / "x.png")
    Image.fromarray((np.arange(1600).reshape(40, 40) * 40).astype(np.uint16)).save(folder / "y.png")  # 16-bit grey
    code, err = run_cli(monkeypatch, capsys, "inpaint", folder, "--checkpoint", trained / "run", "--box", "5,5,10,10", "-o", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x_jpg.png", "x_png.png", "y.png"]
    assert "inpainted 3 image(s)" in err


# --- ssl export ----------------------------------------------------------------------------------------------

def test_export_never_overwrites(trained, tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.pt").write_bytes(b"precious")
    assert_refused(monkeypatch, capsys, "already exists; pass --overwrite", "export", trained / "run", "-o", tmp_path / "mine.pt",
                   keep=(tmp_path,))
    for inside in ("encoder.pt", "checkpoints/last.pt", "config.yaml", "copy.pt"):
        assert_refused(monkeypatch, capsys, "write the output elsewhere", "export", trained / "run", "-o",
                       trained / "run" / inside, "--overwrite", keep=(trained,))
    assert_refused(monkeypatch, capsys, "is a folder", "export", trained / "run", "-o", tmp_path, keep=(tmp_path,))


# --- ssl pixelcnn ----------------------------------------------------------------------------------------------

def test_pixelcnn_run_names_stay_inside_the_output_dir(tiny_data, tmp_path, monkeypatch, capsys):
    assert_refused(monkeypatch, capsys, "must be a plain folder name", "pixelcnn", "--dataset", "folder", "--data", tiny_data / "images",
                   "--output-dir", tmp_path, "--name", "..")


# --- run folders and writes (issue 21): a folder belongs to one command; every write is atomic -----------------

def copy_run(trained: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def test_no_command_writes_into_another_commands_run_folder(tiny_data, trained, tmp_path, monkeypatch, capsys):
    run = copy_run(trained, tmp_path)
    evaluate = ["evaluate", "--checkpoint", trained / "run", *images_arg(tiny_data), "--baselines", "mean", "--num-workers", "0"]
    assert_refused(monkeypatch, capsys, "holds a run of ssl pretrain", *evaluate, "--output-dir", tmp_path, "--name", "run", keep=(tmp_path,))
    (tmp_path / "x_random_s0").mkdir()
    (tmp_path / "x_random_s0" / "notes.txt").write_text("mine")
    finetune = ["finetune", "--dataset", "voc", "--data", tiny_data / "VOCdevkit", "--image-size", "32", "--init", "random",
                "--checkpoint", run, "--output-dir", tmp_path, "--epochs", "1", "--labels-per-class", "2", "--num-workers", "0"]
    assert_refused(monkeypatch, capsys, "did not write (notes.txt)", *finetune, "--name", "x", keep=(tmp_path,))
    (run.parent / "f_random_s0").mkdir()
    (run.parent / "f_random_s0" / ".ssl_run").write_text(json.dumps({"command": "evaluate", "format": 1}))
    assert_refused(monkeypatch, capsys, "holds a run of ssl evaluate", *finetune, "--name", "f", keep=(tmp_path,))
    assert_refused(monkeypatch, capsys, "holds a run of ssl evaluate", *PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path,
                   "--name", "f_random_s0", keep=(tmp_path,))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / ".ssl_run").write_bytes(b"\x00\x01")
    assert_refused(monkeypatch, capsys, "is damaged", *PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path, "--name", "broken",
                   keep=(tmp_path,))


def test_a_finished_run_whose_checkpoint_is_gone_is_refused_not_retrained(tiny_data, trained, tmp_path, monkeypatch, capsys):
    run = copy_run(trained, tmp_path)
    (run / "checkpoints" / "last.pt").unlink()
    for flags in ([], ["--max-steps", "2"]):
        assert_refused(monkeypatch, capsys, "checkpoints/last.pt is gone", *PRETRAIN, *images_arg(tiny_data), "--output-dir", tmp_path,
                       "--name", "run", *flags, keep=(tmp_path,))


def test_outputs_never_replace_inputs_or_run_files(tiny_data, trained, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "p.png")
    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 5:15] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    inpaint = ["inpaint", tmp_path / "p.png", "--checkpoint", trained / "run", "--overwrite"]
    assert_refused(monkeypatch, capsys, "would overwrite the input", *inpaint, "--mask", tmp_path / "m.png", "-o", tmp_path / "m.png",
                   keep=(tmp_path,))
    assert_refused(monkeypatch, capsys, "would overwrite the input", *inpaint, "--box", "1,1,4,4", "-o", trained / "run" / "samples" / "x.png",
                   keep=(trained,))
    finished = tmp_path / "ft"
    (finished / "a_random_s0").mkdir(parents=True)
    (finished / "a_random_s0" / ".ssl_run").write_text(json.dumps({"command": "finetune", "format": 1}))
    (finished / "a_random_s0" / "metrics.json").write_text("{}")
    (tmp_path / "notes.md").write_text("mine")
    for output, expected in ((tmp_path / "notes.md", "was not written by ssl compare"),
                             (finished / "a_random_s0" / "table.md", "a run folder written by ssl finetune"),
                             (finished / "a_random_s0" / "metrics.json", "must name a Markdown file")):
        assert_refused(monkeypatch, capsys, expected, "compare", finished, "--output", output, "--logdir", tmp_path / "tb", keep=(tmp_path,))


def test_a_failed_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from ssl_inpaint.errors import UserError
    from ssl_inpaint.storage import save_atomic, write_text_atomic

    target = tmp_path / "export.pt"
    target.write_bytes(b"the old export")

    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:820] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"cannot use .*export.pt: .*file write failed; check the free space"):
        save_atomic({"w": torch.zeros(1)}, target)
    assert target.read_bytes() == b"the old export" and sorted(p.name for p in tmp_path.iterdir()) == ["export.pt"]

    def no_space(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(UserError, match="No space left on device; free some space"):
        write_text_atomic("new", tmp_path / "config.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.pt"]


def test_pack_owns_its_partial_folder(tiny_data, tmp_path, monkeypatch, capsys):
    import fcntl

    from ssl_inpaint.data.packed import PARTIAL_MARKER

    pack = ["pack", "--dataset", "folder", "--data", tiny_data / "images", "--image-size", "32", "--output", tmp_path / "p"]
    partial = tmp_path / "p.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("not a pack")
    assert_refused(monkeypatch, capsys, "was not made by ssl pack", *pack, keep=(tmp_path,))
    (partial / "mine.txt").unlink()
    (partial / PARTIAL_MARKER).write_text("123\n")
    with open(partial / ".lock", "a+") as held:  # another ssl pack at work
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert_refused(monkeypatch, capsys, "another ssl pack is writing", *pack, keep=(tmp_path,))
    code, err = run_cli(monkeypatch, capsys, *pack)  # a killed pack's leftover: replaced
    assert code == 0, err
    assert not partial.exists() and sorted(p.name for p in (tmp_path / "p").iterdir()) == ["names.txt", "pack.json", "pixels.u8", "shapes.npy"]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels (no pixel data): what a bomb looks like
    to every reader before it decodes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 20_000])  # above Pillow's limit (it warns), above twice it (it raises)
def test_decompression_bombs_and_animations_are_unreadable_images(side, trained, tmp_path, monkeypatch, capsys):
    from ssl_inpaint.data.sources import open_image

    bomb = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ValueError, match="decompression bomb"):
        open_image(bomb)
    assert_refused(monkeypatch, capsys, "decompression bomb", "inpaint", bomb, "--checkpoint", trained / "run", "--box", "1,1,4,4",
                   "-o", tmp_path / "out.png", keep=(tmp_path,))
    frames = [Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="animation or stack of 3 frames"):
        open_image(tmp_path / "moving.gif")


def test_object_masks_refuse_a_file_without_objects_and_report_their_fallbacks(tmp_path, monkeypatch, capsys):
    from ssl_inpaint.data.sources import CocoSource
    from ssl_inpaint.masks import PretextDataset, create_mask_generator

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    for i in range(1, 5):
        Image.fromarray(np.full((30, 40, 3), 40 * i, np.uint8)).save(root / "train2017" / f"{i}.jpg")
    images = [{**IMAGE, "id": i, "file_name": f"{i}.jpg"} for i in range(1, 5)]
    (root / "annotations" / "instances_train2017.json").write_text(coco_file(images, []))
    assert_refused(monkeypatch, capsys, "has no object annotations, so every hole would be a rectangle", *PRETRAIN, "--dataset", "coco",
                   "--data", root, "--mask", "coco_object", "--val-images", "1", "--output-dir", tmp_path / "runs", keep=(root,))
    (root / "annotations" / "instances_train2017.json").write_text(coco_file(images, [ANNOTATION, {**ANNOTATION, "id": 8, "image_id": 2,
                                                                                       "segmentation": [[0, 0, 1, 0, 1, 1]]}]))
    objects = create_mask_generator("coco_object", min_area=0.01, max_area=0.5)
    dataset = PretextDataset(CocoSource(root, "train2017"), 16, objects, torch.zeros(3), seed=0, train=False, use_objects=True)
    fallbacks = [int(dataset[i]["fallback_hole"]) for i in range(4)]
    assert fallbacks == [0, 1, 1, 1]  # image 1's object is eligible; image 2's is too small; 3 and 4 have none


@pytest.mark.parametrize("edit, expected", [
    (lambda meta: [meta], "is a pack of format 'list'"),
    (lambda meta: {**meta, "count": "3"}, "has no valid 'count' ('3')"),
    (lambda meta: {k: v for k, v in meta.items() if k != "image_size"}, "has no valid 'image_size' (None)"),
    (lambda meta: {**meta, "mode": "CMYK"}, "has colour mode 'CMYK'"),
])
def test_a_tampered_pack_is_one_line(edit, expected, tmp_path):
    from ssl_inpaint.data.packed import PACK_FORMAT, PackedSource
    from ssl_inpaint.errors import UserError

    pack = tmp_path / "p"
    pack.mkdir()
    meta = {"format": PACK_FORMAT, "image_size": 4, "mode": "L", "count": 1, "source": "x"}
    (pack / "pack.json").write_text(json.dumps(edit(meta)))
    np.save(pack / "shapes.npy", np.asarray([[1, 4, 4]], dtype=np.int32))
    (pack / "pixels.u8").write_bytes(bytes(16))
    (pack / "names.txt").write_text("a\n")
    with pytest.raises(UserError, match=re.escape(expected)):
        PackedSource(pack)


@pytest.mark.parametrize("content, expected", [
    ("[1, 2]", "not a JSON object"),
    ('{"dataset": "voc", "mode": "finetune", "budget": "all", "metric": "mAP", "seed": 0, "value": NaN, "init": "random"}', "its value is nan"),
])
def test_compare_refuses_results_it_cannot_read(content, expected, tmp_path, monkeypatch, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text(content)
    assert_refused(monkeypatch, capsys, expected, "compare", tmp_path / "r", "--output", tmp_path / "c.md", "--logdir", tmp_path / "tb",
                   keep=(tmp_path,))


def test_a_label_budget_the_data_cannot_honour_is_refused_and_leaves_no_run_folder(tiny_data, trained, tmp_path, monkeypatch, capsys):
    assert_refused(monkeypatch, capsys, "has only 3 labelled images; lower it to 3", "finetune", "--dataset", "voc", "--data",
                   tiny_data / "VOCdevkit", "--image-size", "32", "--checkpoint", trained / "run", "--output-dir", tmp_path,
                   "--labels-per-class", "50", "--epochs", "1", "--num-workers", "0", keep=(trained,))
    assert list(tmp_path.iterdir()) == []


def test_finetune_refuses_a_timm_encoder_under_encoder_unet(tiny_data, tmp_path, monkeypatch, capsys):
    from ssl_inpaint.checkpoint import ENCODER_FORMAT
    from ssl_inpaint.storage import save_atomic

    encoder = tmp_path / "encoder.pt"
    save_atomic({"format": ENCODER_FORMAT, "arch": {"arch": "timm", "name": "resnet18", "in_channels": 4, "image_size": 32},
                 "state_dict": {}}, encoder)
    assert_refused(monkeypatch, capsys, "holds a timm:resnet18 encoder; pass --encoder timm:resnet18", "finetune", "--dataset", "voc",
                   "--data", tiny_data / "VOCdevkit", "--image-size", "32", "--checkpoint", encoder, "--output-dir", tmp_path / "runs",
                   "--labels-per-class", "2", "--epochs", "1", "--num-workers", "0", keep=(tmp_path,))


def test_a_malformed_voc_class_list_names_its_line(tmp_path):
    from ssl_inpaint.data.classification import VOC_CLASSES, voc_targets_from_imagesets
    from ssl_inpaint.errors import UserError

    main_dir = tmp_path / "ImageSets" / "Main"
    main_dir.mkdir(parents=True)
    for name in VOC_CLASSES:
        (main_dir / f"{name}_train.txt").write_text("000001  1\n000002 -1\n")
    assert voc_targets_from_imagesets(tmp_path, "train", ["000001", "000002"])[0][:, 0].tolist() == [1.0, 0.0]
    (main_dir / f"{VOC_CLASSES[3]}_train.txt").write_text("000001  1\n000002\n")
    with pytest.raises(UserError, match="line 2 is not '<image id> <1|-1|0>'"):
        voc_targets_from_imagesets(tmp_path, "train", ["000001", "000002"])


# --- several processes (issue 21): the failing process's own line; the fast half of tests/test_distributed.py ---

@pytest.mark.parametrize("rank, joined, printed", [
    ("0", False, "error: [rank 0] bad option"),  # before the processes connect: every one has it, rank 0 says it
    ("1", False, ""),
    ("1", True, "error: [rank 1] bad option"),  # after: it is this process's own
])
def test_each_process_reports_only_its_own_errors(rank, joined, printed, monkeypatch, capsys):
    import ssl_inpaint.cli as cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(cli, "joined_a_group", lambda: joined)
    with pytest.raises(SystemExit) as exited:
        cli.report("bad option")
    assert exited.value.code == 2 and capsys.readouterr().err.strip() == printed
    monkeypatch.setattr(cli, "joined_a_group", lambda: True)
    assert cli.peer_failed(RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4321"))
    assert not cli.peer_failed(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_the_launcher_reports_the_first_failure_in_one_line(monkeypatch):
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from ssl_inpaint.distributed import relaunch_under_torchrun
    from ssl_inpaint.errors import UserError

    def failing(args):
        failure = ProcessFailure(local_rank=1, pid=42, exitcode=2, error_file="/nonexistent")
        raise ChildFailedError("ssl_inpaint", {1: failure})

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.distributed.run, "main", failing)
    monkeypatch.setattr(sys, "argv", ["ssl", "pretrain", "--nproc", "2"])
    with pytest.raises(UserError, match=r"process 1 of 2 failed first \(exit status 2\)"):
        relaunch_under_torchrun(2)
