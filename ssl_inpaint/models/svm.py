"""``ssl finetune --mode svm``: the VOC07 SVM protocol of self-supervised benchmark suites on frozen
features (scikit-learn's LinearSVC, one per class, its cost chosen by cross-validated AP)."""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from ssl_inpaint.data.classification import LabelledImages


def train_svm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, labelled: LabelledImages, train_ignore: Optional[np.ndarray], costs: list[float], seed: int) -> tuple[np.ndarray, list[float]]:
    """One LinearSVC per class on L2-normalised features; each class's cost is the grid value with
    the best mean average precision over 3 stratified folds, then the SVM is refit on all data."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.preprocessing import normalize
    from sklearn.svm import LinearSVC

    train_x, test_x = normalize(train_x), normalize(test_x)
    num_classes = len(labelled.classes)
    scores = np.zeros((len(test_x), num_classes))
    chosen = []
    for k in range(num_classes):
        keep = np.ones(len(train_x), bool) if train_ignore is None else ~train_ignore[:, k]
        x = train_x[keep]
        y = (train_y[keep, k] > 0) if labelled.multilabel else (train_y[keep] == k)
        y = y.astype(int)
        positives = int(y.sum())
        best_cost = 1.0
        if positives == 0 or positives == len(y):
            chosen.append(float("nan"))
            scores[:, k] = -1.0 if positives == 0 else 1.0
            continue
        folds = min(3, positives, len(y) - positives)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if folds >= 2:
                cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
                results = [
                    cross_val_score(LinearSVC(C=c, class_weight={0: 1.0, 1: 2.0}, dual="auto", max_iter=5000), x, y, cv=cv, scoring="average_precision").mean()
                    for c in costs
                ]
                best_cost = costs[int(np.argmax(results))]
            svm = LinearSVC(C=best_cost, class_weight={0: 1.0, 1: 2.0}, dual="auto", max_iter=5000).fit(x, y)
        chosen.append(best_cost)
        scores[:, k] = svm.decision_function(test_x)
    return scores, chosen
