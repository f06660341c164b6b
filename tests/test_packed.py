"""``ssl pack`` and ``--dataset packed`` (issue 12): a dataset decoded once and read back as an array
gives the samples the files give, and bad packs or sizes end in one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssl_inpaint.data.packed import PackedSource
from ssl_inpaint.data.datasets import create_source
from ssl_inpaint.data.sources import CocoSource
from ssl_inpaint.masks import PretextDataset, create_mask_generator
from tests.helpers import run_ssl
from tests.test_bad_inputs import run_cli, snapshot


@pytest.fixture(scope="module")
def coco_pack(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "coco32"
    run_ssl("pack", "--dataset", "coco", "--data", tiny_data / "coco", "--split", "train2017", "--image-size", "32", "--output", out)
    return out


def test_a_pack_gives_the_samples_the_files_give(tiny_data, coco_pack):
    files = CocoSource(tiny_data / "coco", "train2017")
    pack = create_source("packed", coco_pack, "train2017")
    assert isinstance(pack, PackedSource) and len(pack) == len(files) and pack.stored_size == 32
    assert json.loads((coco_pack / "pack.json").read_text())["count"] == len(files)
    assert str(files.describe(3)) in pack.describe(3)
    masks = create_mask_generator("rect")
    for train in (True, False):
        from_files = PretextDataset(files, 32, masks, torch.zeros(3), seed=4, train=train)
        from_pack = PretextDataset(pack, 32, masks, torch.zeros(3), seed=4, train=train)
        for epoch in (0, 1):
            from_files.set_epoch(epoch), from_pack.set_epoch(epoch)
            indices = list(range(len(files)))
            for ours, reference in zip(from_pack.__getitems__(indices), [from_files[i] for i in indices]):
                assert all(torch.equal(ours[k], reference[k]) for k in ("image", "mask", "input"))


def test_a_pack_of_another_size_an_existing_output_and_a_broken_pack_are_refused(tiny_data, coco_pack, tmp_path, monkeypatch, capsys):
    before = snapshot(coco_pack)
    status, err = run_cli(monkeypatch, capsys, "pack", "--dataset", "coco", "--data", tiny_data / "coco", "--image-size", "32", "--output", coco_pack)
    assert status == 2 and "exists already" in err and len(err.strip().splitlines()) == 1
    assert snapshot(coco_pack) == before
    with pytest.raises(Exception, match="packed at 32 px; use --image-size 32"):
        PretextDataset(PackedSource(coco_pack), 64, create_mask_generator("rect"), torch.zeros(3), seed=0)
    status, err = run_cli(monkeypatch, capsys, "pack", "--dataset", "packed", "--data", coco_pack, "--output", tmp_path / "again")
    assert status == 2 and "--dataset" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("pack.json", "shapes.npy", "names.txt"):
        (broken / name).write_bytes((coco_pack / name).read_bytes())
    (broken / "pixels.u8").write_bytes((coco_pack / "pixels.u8").read_bytes()[:-5])  # cut short
    with pytest.raises(Exception, match="incomplete"):
        PackedSource(broken)
    with pytest.raises(Exception, match="not a pack"):
        PackedSource(tmp_path)


@pytest.mark.slow
def test_pretrain_reads_a_pack(coco_pack, tmp_path):
    run_ssl("pretrain", "--dataset", "packed", "--data", coco_pack, "--image-size", "32", "--bottleneck-channels", "16",
            "--batch-size", "4", "--val-images", "4", "--max-steps", "2", "--mask", "rect", "--no-global-d", "--no-local-d",
            "--num-workers", "0", "--output-dir", tmp_path, "--name", "packed")
    assert (tmp_path / "packed" / "encoder.pt").is_file()


def test_unreadable_images_are_skipped_or_stop_a_strict_pack(tiny_data, tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((tiny_data / "coco" / "train2017").glob("*.jpg"))[:3]:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    common = ["pack", "--dataset", "folder", "--data", photos, "--split", "", "--image-size", "32"]
    status, err = run_cli(monkeypatch, capsys, *common, "--strict", "--output", tmp_path / "strict")
    assert status == 2 and "broken.jpg" in err and not (tmp_path / "strict").exists()
    assert not (tmp_path / "strict.partial").exists()  # nothing half-written is left
    run_ssl(*common, "--output", tmp_path / "lenient")
    assert len(PackedSource(tmp_path / "lenient")) == 3
    assert json.loads((tmp_path / "lenient" / "pack.json").read_text())["skipped"] == 1
