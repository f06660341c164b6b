"""A template for your own dataset kind: copy this file, rename the kind, change the readers.

    SSL_INPAINT_PLUGINS=templates/custom_dataset.py ssl pretrain --dataset csv --data photos.csv --split train ...
    SSL_INPAINT_PLUGINS=templates/custom_dataset.py ssl finetune --dataset csv --data photos.csv --train-split train --test-split test ...

(An ImageFolder tree, ``DATA/<split>/<class>/*.jpg``, needs no code: ``--dataset folder``.)

A kind is one ``DatasetKind`` registered in ``DATASETS`` under its ``--dataset`` name:

- ``images(root, split, year)``: the split's images as an ``ImageSource`` (``FileListSource`` for a list of
  files: it decodes with PIL, handles every colour mode and counts unreadable files). The pretext,
  ``ssl evaluate`` and ``ssl pack`` read this.
- ``labelled(root, split, year, voc_labels)``: the same images with their labels as ``LabelledImages``
  (class indices, or a 0/1 matrix with ``multilabel=True``); None for a kind without labels.
  ``ssl finetune`` and the online probe read this.
- ``probe_splits``: the (train, held-out) splits the online probe reads by default; ``evaluate_split``:
  ``ssl evaluate``'s default split; ``packable``: whether ``ssl pack`` may pack it; ``objects``: whether
  its images carry object masks (``ImageSource.objects``) for ``--mask coco_object``.
Raise ``UserError`` with the problem and the fix for data that cannot be read; the command prints it as
one line. ``root`` is the ``--data`` path, checked to exist.

tests/test_extending.py pretrains and fine-tunes on a generated CSV through the ``ssl`` command.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ssl_inpaint.data import DATASETS, DatasetKind, FileListSource, LabelledImages
from ssl_inpaint.errors import UserError

COLUMNS = ("path", "label", "split")


def read_rows(table: Path, split: str) -> list[dict[str, str]]:
    """The rows of ``split`` in a CSV with a header ``path,label,split`` (paths relative to the CSV)."""
    if not table.is_file():
        raise UserError(f"--dataset csv reads a CSV file, got {table} (pass --data pointing at your .csv)")
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{table} has no column {', '.join(missing)}: its header must hold {','.join(COLUMNS)}")
        rows = [row for row in reader if row["split"] == split]
    if not rows:
        raise UserError(f"{table} has no rows of split {split!r} (pass --split / --train-split / --test-split)")
    return rows


def csv_images(root: Path, split: str, year: str) -> FileListSource:
    return FileListSource([root.parent / row["path"] for row in read_rows(root, split)], name=f"csv {root.name}:{split}")


def csv_labelled(root: Path, split: str, year: str, voc_labels: str) -> LabelledImages:
    rows = read_rows(root, split)
    # Every split of the file shares one class list, so train and test indices mean the same classes.
    with root.open(newline="", encoding="utf-8") as handle:
        classes = tuple(sorted({row["label"] for row in csv.DictReader(handle)}))
    targets = np.asarray([classes.index(row["label"]) for row in rows], dtype=np.int64)
    return LabelledImages(csv_images(root, split, year), targets, classes, multilabel=False)


DATASETS.add("csv", DatasetKind(csv_images, csv_labelled, probe_splits=("train", "test"), evaluate_split="test"))
