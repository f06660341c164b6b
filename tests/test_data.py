import gzip
import json

import numpy as np
import pytest
import torch

from ssl_inpaint.data import create_source
from ssl_inpaint.masks import PretextDataset
from ssl_inpaint.data.sources import CocoSource, fashion_mnist_root
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks import create_mask_generator


def dataset(source, mask="centre", **kwargs):
    return PretextDataset(source, 64, create_mask_generator(mask), torch.zeros(source.channels), seed=0, **kwargs)


def test_coco_reads_every_image_including_unannotated(tiny_data):
    source = create_source("coco", tiny_data / "coco", "train2017")
    document = json.loads((tiny_data / "coco/annotations/instances_train2017.json").read_text())
    annotated = {a["image_id"] for a in document["annotations"]}
    assert len(source) == len(document["images"]) > len(annotated)
    objects = [source.objects(i) for i in range(len(source))]
    assert any(o.shape[0] == 0 for o in objects)  # unannotated images have no objects
    crowd = [a for a in document["annotations"] if a["iscrowd"]]
    assert crowd and isinstance(crowd[0]["segmentation"]["counts"], list)
    item = dataset(source)[0]
    assert item["image"].shape == (3, 64, 64) and item["input"].shape == (4, 64, 64)
    assert -1 <= item["image"].min() and item["image"].max() <= 1


def test_coco_object_masks_follow_the_crop(tiny_data):
    source = CocoSource(tiny_data / "coco", "train2017")
    ds = dataset(source, mask="coco_object", use_objects=True, train=False)
    with_objects = [i for i in range(len(source)) if source.objects(i).shape[0] > 0]
    hits = 0
    for i in with_objects:
        item = ds[i]
        # The hole must be exactly one object's shape: the object's colour fills it in the image.
        hole = item["mask"][0] > 0
        colours = item["image"][:, hole]
        hits += int(colours.std(dim=1).max() < 0.25)
    assert hits >= len(with_objects) // 2


def test_samples_are_deterministic_per_epoch(tiny_data):
    source = create_source("coco", tiny_data / "coco", "train2017")
    ds = dataset(source, mask="rect")
    a, b = ds[3], ds[3]
    assert torch.equal(a["input"], b["input"])
    ds.set_epoch(1)
    assert not torch.equal(a["input"], ds[3]["input"])


def test_folder_reads_every_format_and_mode(tiny_data):
    source = create_source("folder", tiny_data / "images", "")
    suffixes = {p.suffix for p in source.paths}
    assert len(source) == 14 and suffixes == {".jpg", ".png", ".bmp", ".webp"}
    for i in range(len(source)):
        assert source.load(i).mode == "RGB"
        assert dataset(source)[i]["image"].shape == (3, 64, 64)


def test_voc_split_lists_the_images(tiny_data):
    source = create_source("voc", tiny_data / "VOCdevkit", "trainval", year="2007")
    assert len(source) == 60 and source.paths[0].name == "000001.jpg"


def test_corrupt_image_is_skipped_and_counted_or_fatal_with_strict(tiny_data, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((tiny_data / "images" / "a").glob("*.jpg"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "0_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    source = create_source("folder", folder, "")
    assert source.paths[0].name == "0_broken.jpg"
    item = dataset(source)[0]
    assert item["skipped"] == 1 and item["image"].shape == (3, 64, 64)
    with pytest.raises(UserError, match="unreadable image .*0_broken.jpg.*--strict"):
        dataset(source, strict=True)[0]


def test_missing_and_empty_datasets_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create_source("folder", tmp_path / "nope", "")
    with pytest.raises(UserError, match="has no images"):
        create_source("folder", tmp_path, "")
    with pytest.raises(UserError, match="annotation file not found"):
        create_source("coco", tmp_path, "train2017")
    with pytest.raises(UserError, match="Fashion-MNIST files not found"):
        create_source("fashion_mnist", tmp_path, "train")


def write_idx(path, array):
    """The idx format: magic (0, 0, dtype 0x08, ndim), big-endian dims, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_gz_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    source = create_source("fashion_mnist", tmp_path, "test")
    assert len(source) == 5 and source.channels == 1
    assert (fashion_mnist_root(tmp_path) / "FashionMNIST/raw/t10k-images-idx3-ubyte").is_file()
    item = PretextDataset(source, 32, create_mask_generator("centre"), torch.zeros(1), seed=0)[0]
    assert item["image"].shape == (1, 32, 32) and item["input"].shape == (2, 32, 32)
    assert list(source.labels) == [0, 1, 2, 3, 4]
