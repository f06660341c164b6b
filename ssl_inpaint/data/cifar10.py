"""CIFAR-10 in its official distribution files, as ``--dataset cifar10``: no conversion to image files.

Two official versions exist, and ``--data`` may point at the folder that holds one of them or at the
batches folder itself:

* the **binary version** (``cifar-10-batches-bin/``: ``data_batch_1.bin`` ... ``data_batch_5.bin``,
  ``test_batch.bin``, ``batches.meta.txt``): each record is one label byte and 3072 pixel bytes (the
  red, green and blue 32x32 planes). It is read here with NumPy; nothing is unpickled.
* the **python version** (``cifar-10-batches-py/``, what ``torchvision.datasets.CIFAR10`` downloads):
  pickled batches. It is read by torchvision's own loader with ``download=False``, which checks every
  file's MD5 against the published one *before* unpickling it, so only the official files are ever
  unpickled; any other file there is refused.

When both are present the binary version is read. The split is ``train`` (50,000) or ``test`` (10,000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ssl_inpaint.data.sources import ImageSource
from ssl_inpaint.errors import UserError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BINARY_FOLDER, PYTHON_FOLDER = "cifar-10-batches-bin", "cifar-10-batches-py"
BINARY_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
RECORD_BYTES = 1 + 3 * 32 * 32
SPLITS = tuple(BINARY_FILES)
WHERE = f"--data must hold {BINARY_FOLDER}/ or {PYTHON_FOLDER}/ (torchvision's CIFAR10 root), or be one of them"


def find_batches(data: str | Path) -> Path:
    """The batches folder ``data`` names: itself, or its binary or python sub-folder."""
    data = Path(data)
    if data.name in (BINARY_FOLDER, PYTHON_FOLDER) and data.is_dir():
        return data
    for name in (BINARY_FOLDER, PYTHON_FOLDER):
        if (data / name).is_dir():
            return data / name
    raise UserError(f"CIFAR-10 files not found in {data} ({WHERE})")


def read_binary_batches(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64) of a split of the binary version."""
    images, labels = [], []
    for name in BINARY_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise UserError(f"CIFAR-10 file not found: {path} (the binary version has {', '.join(BINARY_FILES[split])})")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD_BYTES:
            raise UserError(f"{path} is not a CIFAR-10 binary batch ({raw.size} bytes, not a multiple of {RECORD_BYTES}); download it again")
        records = raw.reshape(-1, RECORD_BYTES)
        if records[:, 0].max() >= len(CIFAR10_CLASSES):
            raise UserError(f"{path} holds labels above 9: it is not a CIFAR-10 batch (CIFAR-100's binary files have two label bytes)")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_binary_classes(folder: Path) -> tuple[str, ...]:
    """The class names of ``batches.meta.txt`` (one a line), or the published ones if it is absent."""
    meta = folder / "batches.meta.txt"
    if not meta.is_file():
        return CIFAR10_CLASSES
    names = tuple(line.strip() for line in meta.read_text(errors="replace").splitlines() if line.strip())
    return names if len(names) == len(CIFAR10_CLASSES) else CIFAR10_CLASSES


def read_python_batches(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The python version through torchvision's loader, which verifies each file's MD5 before it unpickles."""
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(folder.parent), train=split == "train", download=False)
    except RuntimeError:
        raise UserError(
            f"{folder} does not hold the official CIFAR-10 python files (a file is missing or its MD5 differs from the "
            f"published one; only those are unpickled); download cifar-10-python.tar.gz again, or use the binary version"
        ) from None
    return np.ascontiguousarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64), tuple(dataset.classes)


class Cifar10Source(ImageSource):
    """A split of CIFAR-10 held in memory as one uint8 array, with its labels."""

    mode = "RGB"
    in_memory = True

    def __init__(self, data: str | Path, split: str):
        if split not in SPLITS:
            raise UserError(f"CIFAR-10 split must be 'train' or 'test', got {split!r} (check --split / --train-split / --test-split)")
        folder = find_batches(data)
        if folder.name == BINARY_FOLDER:
            self.images, self.targets = read_binary_batches(folder, split)
            self.classes = read_binary_classes(folder)
        else:
            self.images, self.targets, self.classes = read_python_batches(folder, split)
        self.name = f"CIFAR-10 {split}"

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, min_side: int = 0) -> Image.Image:
        return Image.fromarray(self.images[index], "RGB")

    def pixels(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        return torch.from_numpy(self.images[list(indices)]).permute(0, 3, 1, 2).contiguous()  # what load's RGB image holds

    @property
    def labels(self) -> np.ndarray:
        return self.targets
