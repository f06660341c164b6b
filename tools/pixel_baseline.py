"""The yardstick no network has to earn: the online probe's two classifiers (``probe.linear_scores``,
logistic regression on standardised features; ``probe.knn_scores``, a cosine 20-nearest-neighbour vote)
on the raw pixels of exactly the labelled images ``ssl finetune`` trains on (``label_budget`` with
``--data-seed``), scored on the whole test split at the transfer's image size. An encoder whose frozen
features a linear classifier reads no better than this has not made the classes more separable.

    .venv/bin/python tools/pixel_baseline.py --dataset fashion_mnist --data /usr/share/datasets/fashion-mnist --image-size 32
    .venv/bin/python tools/pixel_baseline.py --dataset folder --data PHOTOS/cifar10 --image-size 32 --labels-per-class 10,100
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ssl_inpaint.data import create_classification_dataset
from ssl_inpaint.data.classification import LabelledImages, label_budget
from ssl_inpaint.errors import UserError
from ssl_inpaint.metrics import mean_average_precision, top1_accuracy
from ssl_inpaint.probe import KNN_K, knn_scores, linear_scores, stack_images


def pixels(labelled: LabelledImages, image_size: int) -> np.ndarray:
    """(N, C*S*S) pixels in [-1, 1]: the probe's evaluation view (resize, centre crop), flattened."""
    return stack_images(labelled, image_size).flatten(1).numpy().astype(np.float64)


def score(scores: np.ndarray, labelled: LabelledImages) -> float:
    if labelled.multilabel:
        return 100 * mean_average_precision(scores, labelled.targets)[0]
    return 100 * top1_accuracy(scores, labelled.targets)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--labels-per-class", default="10", help="comma-separated budgets; 0: every training label")
    p.add_argument("--data-seed", type=int, default=0)
    args = p.parse_args()
    train = create_classification_dataset(args.dataset, args.data, args.train_split)
    test = create_classification_dataset(args.dataset, args.data, args.test_split)
    test_x = pixels(test, args.image_size)
    print("| labels per class | train images | pixels: linear | pixels: kNN (k = 20) |\n|---|---|---|---|")
    for budget in (int(b) for b in args.labels_per_class.split(",")):
        subset = train.subset(label_budget(train, args.data_seed, per_class=budget)) if budget else train
        train_x = pixels(subset, args.image_size)
        linear = linear_scores(train_x, subset.targets, test_x, subset.multilabel)
        knn = knn_scores(train_x, subset.targets, test_x, KNN_K, subset.multilabel, len(subset.classes))
        print(f"| {budget or 'all'} | {len(subset)} | {score(linear, test):.2f} | {score(knn, test):.2f} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
