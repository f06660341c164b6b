"""Image sources: where pictures come from (COCO, VOCdevkit, a folder, Fashion-MNIST), label-free.

A source only knows how to list and decode its images (and, for COCO, the object masks of an image);
cropping, masking and batching happen in :mod:`ssl_inpaint.masks.pretext`. Decoding goes through PIL,
which reads every format a user's folder may hold (JPEG incl. CMYK, PNG incl. palette/RGBA, WebP, BMP)
and converts it to the source's channel mode.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import math
import shutil
import warnings
import zlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ssl_inpaint.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to 'RGB' or 'L'; transparent pixels are composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert(mode)


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_8bit(image: Image.Image) -> Image.Image:
    """The image with 8 bits per channel, exactly or not at all: 16-bit grey (Pillow's I;16 modes, and
    mode I from a PNG, which is how Pillow may open a 16-bit PNG) is scaled by v >> 8 (65535 -> 255);
    a float image or integers of unknown range raise ValueError, never a silent clip to white (which
    is what ``convert('L')`` does to 16-bit values)."""
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"{image.mode} image with values outside 0..65535")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L")
    if image.mode in ("I", "F"):
        raise ValueError(f"a {image.mode} image ({'float' if image.mode == 'F' else '32-bit integer'} pixels of unknown range); convert it to 8 or 16 bits")
    return image


ANIMATED_FORMATS = ("GIF", "PNG", "WEBP", "TIFF")  # several frames here: which one would be the image is a guess


def open_image(path: Path, min_side: int = 0) -> Image.Image:
    """The one way every command decodes an image file: fully (a truncated file fails here, not later
    inside a transform), upright (the EXIF rotation a viewer applies), and at 8 bits per channel
    (``to_8bit``); the colour mode is left as stored. Undecodable files raise OSError or ValueError, and
    so do images above Pillow's pixel limit (decompression bombs) and animations (which frame?).

    ``min_side`` > 0 lets a JPEG decode at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling,
    ``Image.draft``) as long as its shorter side stays at least ``min_side``: a 640x480 photo cropped to
    128 px decodes at 320x240, about 2.5x faster, and is then resized as before."""
    try:
        with warnings.catch_warnings():  # between 1x and 2x its limit Pillow only warns, then decodes
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"a decompression bomb ({str(exc).split('could be')[0].strip()})") from None
    with opened as image:
        if image.format in ANIMATED_FORMATS and getattr(image, "n_frames", 1) > 1:  # not MPO: a camera JPEG's extra frames are previews
            raise ValueError(f"an animation or stack of {image.n_frames} frames; save the frame you mean as a PNG")
        if min_side and image.format == "JPEG" and min(image.size) >= 2 * min_side:
            scale = min_side / min(image.size)
            image.draft(None, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
        image.load()
        upright = ImageOps.exif_transpose(image)
        upright.format = image.format
        return to_8bit(upright)


def read_image(path: Path, mode: str = "RGB", min_side: int = 0) -> Image.Image:
    """``open_image`` converted to ``mode`` ('RGB' or 'L'), as the training and evaluation data need."""
    return to_mode(open_image(path, min_side), mode)


class ImageSource:
    """A sized collection of images. Subclasses set ``mode`` ('RGB' or 'L') and implement the methods."""

    mode = "RGB"
    name = "images"
    in_memory = False  # True: loading an index is cheap and gives the same pixels every time
    stored_size: Optional[int] = None  # images stored already resized to this shorter side (a pack)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int, min_side: int = 0) -> Image.Image:
        """Image ``index``; ``min_side`` > 0 allows a reduced-size decode whose shorter side is at least that."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """What to name in an error or warning about this item (usually its path)."""
        return f"{self.name}[{index}]"

    def objects(self, index: int) -> Optional[np.ndarray]:
        """Binary object masks (K, H, W) at the image's native size, or None if the source has none."""
        return None

    def pixels(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        """The images at ``indices`` as one uint8 (N, C, H, W) tensor, the pixels ``load`` gives, when
        the source holds them as an array of same-sized images; None otherwise (files)."""
        return None

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


class FileListSource(ImageSource):
    def __init__(self, paths: Sequence[Path], name: str, mode: str = "RGB"):
        self.paths = list(paths)
        self.name = name
        self.mode = mode

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, min_side: int = 0) -> Image.Image:
        return read_image(self.paths[index], self.mode, min_side)

    def describe(self, index: int) -> str:
        return str(self.paths[index])


class SubsetSource(ImageSource):
    """A fixed subset of another source (used to hold out the validation images)."""

    def __init__(self, source: ImageSource, indices: Sequence[int]):
        self.source, self.indices = source, list(indices)
        self.mode, self.name, self.in_memory, self.stored_size = source.mode, source.name, source.in_memory, source.stored_size

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int, min_side: int = 0) -> Image.Image:
        return self.source.load(self.indices[index], min_side)

    def describe(self, index: int) -> str:
        return self.source.describe(self.indices[index])

    def objects(self, index: int) -> Optional[np.ndarray]:
        return self.source.objects(self.indices[index])

    def pixels(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        return self.source.pixels([self.indices[i] for i in indices])


def _require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{what} not found: {path} ({fix})")
    return path


def folder_source(root: str | Path) -> FileListSource:
    """Every image under ``root``, recursively, in sorted order."""
    root = _require_dir(Path(root), "image folder", "pass --data pointing at a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return FileListSource(paths, name=f"folder {root}")


class CocoSource(ImageSource):
    """COCO in the official layout: ROOT/annotations/instances_<split>.json and ROOT/<split>/*.jpg.

    All images of the split are used, annotated or not: the pretext needs no labels. The annotations
    serve only the ``coco_object`` masks.
    """

    max_objects = 16  # the largest objects of an image are enough to choose a hole from

    def __init__(self, root: str | Path, split: str):
        from pycocotools.coco import COCO

        root = _require_dir(Path(root), "COCO root", "pass --data pointing at the folder holding annotations/")
        annotation_file = root / "annotations" / f"instances_{split}.json"
        if not annotation_file.is_file():
            raise UserError(
                f"COCO annotation file not found: {annotation_file} (check --data and --split, "
                f"e.g. --split train2017)"
            )
        self.image_dir = _require_dir(root / split, "COCO image folder", "it must sit beside annotations/")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
            try:
                self.coco = COCO(str(annotation_file))
            except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as exc:
                # pycocotools asserts the top level is an object and indexes the rest without checks
                reason = str(exc) or exc.__class__.__name__
                raise UserError(
                    f"{annotation_file} is not a COCO instances file ({reason}); it must be a JSON object "
                    f"with images, annotations and categories"
                ) from None
        self.annotation_file = annotation_file
        _check_coco_fields(self.coco, annotation_file)
        self.image_ids = sorted(self.coco.getImgIds())
        self.name = f"COCO {split}"

    def __len__(self) -> int:
        return len(self.image_ids)

    def _path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def load(self, index: int, min_side: int = 0) -> Image.Image:
        return read_image(self._path(index), self.mode, min_side)

    def describe(self, index: int) -> str:
        return str(self._path(index))

    def annotation_count(self) -> int:
        return len(self.coco.anns)

    def objects(self, index: int) -> Optional[np.ndarray]:
        info = self.coco.imgs[self.image_ids[index]]
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"], iscrowd=None))
        annotations = sorted(annotations, key=lambda a: -a.get("area", 0))[: self.max_objects]
        if not annotations:
            return np.zeros((0, info["height"], info["width"]), dtype=np.uint8)
        try:
            return np.stack([self.coco.annToMask(a) for a in annotations])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # pycocotools indexes without checks
            ids = ", ".join(str(a.get("id")) for a in annotations)
            raise UserError(
                f"{self.annotation_file}: a segmentation of image {info['id']} (annotations {ids}) is malformed "
                f"({exc.__class__.__name__}: {str(exc)[:100]}); fix or remove it"
            ) from None


def _check_coco_fields(coco: Any, annotation_file: Path) -> None:
    """The fields this toolkit reads, with their types, in every image and annotation entry: a
    missing ``file_name`` or a string ``area`` is one line naming the entry, not a traceback later."""
    def refuse(what: str) -> None:
        raise UserError(f"{annotation_file} is not a usable COCO instances file: {what}")

    for image_id, info in coco.imgs.items():
        name = info.get("file_name")
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            refuse(f"image {image_id} has no usable file_name ({name!r}; a path inside the split's folder)")
        if not all(isinstance(info.get(k), int) and info[k] > 0 for k in ("width", "height")):
            refuse(f"image {image_id} ({name}) needs positive integer width and height")
    for ann_id, ann in coco.anns.items():
        if ann.get("image_id") not in coco.imgs:
            refuse(f"annotation {ann_id} names no image of the file (image_id {ann.get('image_id')!r})")
        if not isinstance(ann.get("area", 0), (int, float)) or isinstance(ann.get("area"), bool):
            refuse(f"annotation {ann_id} has a non-numeric area ({ann.get('area')!r})")
        if not isinstance(ann.get("segmentation", []), (list, dict)):
            refuse(f"annotation {ann_id} has a segmentation that is neither polygons nor RLE")


def voc_root(root: str | Path, year: str) -> Path:
    """Accept either the VOCdevkit folder or its VOC<year> subfolder."""
    root = Path(root)
    if (root / f"VOC{year}").is_dir():
        root = root / f"VOC{year}"
    return _require_dir(
        root / "ImageSets" / "Main", f"VOC{year} ImageSets/Main", "pass --data VOCdevkit and the right --year"
    ).parent.parent


def voc_image_ids(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():  # named by the split, not a flag: --split, --train-split and the probe's all end here
        present = sorted(p.stem for p in split_file.parent.glob("*.txt") if "_" not in p.stem)
        raise UserError(f"VOC split {split!r} not found: no {split_file}; the splits there are: {', '.join(present) or 'none'}")
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def voc_source(root: str | Path, year: str, split: str) -> FileListSource:
    root = voc_root(root, year)
    ids = voc_image_ids(root, split)
    return FileListSource([root / "JPEGImages" / f"{i}.jpg" for i in ids], name=f"VOC{year} {split}")


def fashion_mnist_root(data: str | Path) -> Path:
    """Find Fashion-MNIST and return a root in torchvision's layout (ROOT/FashionMNIST/raw/ unzipped).

    ``data`` may already be in that layout, or be a folder of the idx ``.gz`` files (as the Debian
    package ``dataset-fashion-mnist`` installs them), which are unzipped once into a cache beside it or,
    if that folder is read-only, under ~/.cache/ssl_inpaint.
    """
    data = Path(data)
    if (data / "FashionMNIST" / "raw" / FASHION_MNIST_FILES["train"][0]).is_file():
        return data
    gz_files = [data / f"{name}.gz" for pair in FASHION_MNIST_FILES.values() for name in pair]
    if not all(p.is_file() for p in gz_files):
        hint = (
            f"on Debian: apt-get install dataset-fashion-mnist, then --data {DEBIAN_FASHION_MNIST}; "
            "elsewhere download the four idx .gz files from github.com/zalandoresearch/fashion-mnist"
        )
        raise UserError(f"Fashion-MNIST files not found in {data} ({hint})")
    for cache in (data / "torchvision-layout", Path.home() / ".cache" / "ssl_inpaint" / "fashion-mnist"):
        raw = cache / "FashionMNIST" / "raw"
        try:
            raw.mkdir(parents=True, exist_ok=True)
            for gz in gz_files:
                _unzip_once(gz, raw / gz.stem)
        except PermissionError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                continue
            raise
        for images, labels in FASHION_MNIST_FILES.values():
            _check_idx_pair(raw / images, raw / labels)
        return cache
    raise UserError(f"cannot unzip Fashion-MNIST from {data}: no writable cache folder")


def _unzip_once(gz: Path, target: Path) -> None:
    """Unzip ``gz`` to ``target`` unless the copy there came from this very file (same path, size and
    modification time, recorded beside it), so replacing a corrupt download refreshes the cache."""
    info = gz.stat()
    stamp = target.with_name(target.name + ".source")
    key = f"{gz.resolve()} {info.st_size} {info.st_mtime_ns}"
    if target.is_file() and stamp.is_file() and stamp.read_text() == key:
        return
    tmp = target.with_name(target.name + ".tmp")
    try:
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{gz} is not a complete gzip file ({exc}); download it again") from None
    tmp.replace(target)
    stamp.write_text(key)


def _idx_shape(path: Path, magic: int, expected_dims: int) -> list[int]:
    header = path.read_bytes()[: 4 + 4 * expected_dims]
    if len(header) < 4 + 4 * expected_dims or int.from_bytes(header[:4], "big") != magic:
        raise UserError(f"{path} is not an idx file of Fashion-MNIST (wrong header); download the .gz files again")
    return [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims)]


def _check_idx_pair(images: Path, labels: Path) -> None:
    """Refuse idx files whose headers, sizes or counts disagree (a truncated or mixed-up download),
    before torchvision reads them into wrong images."""
    n, rows, cols = _idx_shape(images, 0x0803, 3)
    (m,) = _idx_shape(labels, 0x0801, 1)
    if images.stat().st_size != 16 + n * rows * cols or labels.stat().st_size != 8 + m:
        raise UserError(f"{images} or {labels} is truncated (its size disagrees with its header); download the .gz files again")
    if n != m or (rows, cols) != (28, 28):
        raise UserError(f"{images} ({n} images of {rows}x{cols}) and {labels} ({m} labels) do not belong together")


class FashionMnistSource(ImageSource):
    mode = "L"
    in_memory = True

    def __init__(self, data: str | Path, split: str):
        from torchvision.datasets import FashionMNIST

        if split not in FASHION_MNIST_FILES:
            raise UserError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
        self.dataset = FashionMNIST(str(fashion_mnist_root(data)), train=split == "train", download=False)
        self.name = f"Fashion-MNIST {split}"

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int, min_side: int = 0) -> Image.Image:
        return self.dataset[index][0]

    def pixels(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        return self.dataset.data[list(indices)].unsqueeze(1)  # what load's PIL 'L' image holds

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.targets.numpy()
