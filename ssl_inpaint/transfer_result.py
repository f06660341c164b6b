"""``RUN/metrics.json`` as a type: a ``TransferResult`` is what ``ssl finetune`` writes and ``ssl compare``
reads, so the two commands cannot disagree about a key, and a file that is not one is refused in one
line before any number is computed from it."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ssl_inpaint.errors import UserError

# The keys in the order ssl finetune has always written them (per_class and svm_costs when present).
KEY_ORDER = (
    "dataset", "data_root", "mode", "init", "init_weights", "encoder", "budget", "labels_per_class", "label_fraction",
    "data_seed", "seed", "checkpoint", "n_train", "n_test", "world_size", "run_prefix", "protocol", "arch", "metric",
    "value", "val_value", "n_val", "per_class", "svm_costs", "history",
)
OPTIONAL = ("val_value", "n_val", "per_class", "svm_costs", "protocol")  # written only when present
REQUIRED = ("dataset", "mode", "init", "budget", "seed", "metric", "value")


@dataclass(frozen=True)
class TransferResult:
    """One transfer run: what it trained on and how, and what it scored."""

    dataset: str  # the --dataset kind
    mode: str  # finetune, linear or svm
    init: str  # pretrained, random, datadep, or weights-<file stem>
    budget: str  # "10-per-class", "5%", "all"
    seed: int
    metric: str  # top1 or mAP
    value: float  # in [0, 1]
    checkpoint: str = ""  # the pretrain run or encoder.pt (pretrained), or the architecture's source (baselines)
    data_root: str = ""  # the resolved --data: with the protocol's splits, year and data seed, the dataset's identity
    init_weights: str = ""  # the weights file of a weights-* init
    encoder: str = "unet"
    labels_per_class: int = 0
    label_fraction: float = 0.0
    data_seed: int = 0
    n_train: int = 0
    n_test: int = 0
    world_size: int = 1
    run_prefix: str = ""  # the --name that the runs of one command share
    protocol: Optional[dict[str, Any]] = None  # every protocol setting (config.option protocol=True); None: an older run
    arch: dict[str, Any] = field(default_factory=dict)  # the encoder's architecture
    val_value: Optional[float] = None  # the same metric on the held-out training images of --val-per-class (None: not asked)
    n_val: Optional[int] = None  # how many held-out images val_value comes from
    per_class: Optional[dict[str, float]] = None  # AP per class (multi-label data)
    svm_costs: Optional[dict[str, float]] = None  # the cost chosen per class (--mode svm)
    history: list[dict[str, Any]] = field(default_factory=list)  # the learning curve

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {key: values[key] for key in KEY_ORDER if not (key in OPTIONAL and values[key] is None)}

    @property
    def dataset_identity(self) -> tuple[str, str]:
        """(kind, data root): what the run was trained and tested on (with the splits, VOC year and
        label-subset seed that its protocol settings hold)."""
        return self.dataset, self.data_root

    @classmethod
    def from_json(cls, data: Any) -> "TransferResult":
        """Checked: a JSON object with every required key, an integer seed and a finite score."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise KeyError(", ".join(missing))
        known = {f.name for f in dataclasses.fields(cls)}
        result = cls(**{k: v for k, v in data.items() if k in known})
        value = float(result.value)
        if not math.isfinite(value):
            raise ValueError(f"its value is {value}: no score to compare")
        val_value = None if result.val_value is None else float(result.val_value)
        if val_value is not None and not math.isfinite(val_value):
            raise ValueError(f"its val_value is {val_value}: no validation score to choose by")
        return dataclasses.replace(result, seed=int(result.seed), value=value, val_value=val_value)

    @classmethod
    def read(cls, run: Path) -> "TransferResult":
        """RUN/metrics.json, or one error line saying why it is not a transfer result."""
        path = run / "metrics.json"
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{path} is not an ssl finetune result ({exc})") from None
