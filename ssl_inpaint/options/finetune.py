"""The options of ``ssl finetune``: every flag and recipe key of a transfer run, its default, domain,
help and protocol decision (what ``ssl compare`` pairs runs by), and the checks across options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_inpaint.config import at_least, check_choices, fields_deciding, DistributedOptions, MAX_SIDE, MAX_WIDTH, option, positive, PrecisionOptions, Range, RunOptions, RuntimeOptions, SEEDS, UNIT
from ssl_inpaint.data.classification import AUGMENTATIONS, DEFAULT_AUGMENT, parse_augment
from ssl_inpaint.data.datasets import DATASETS, labelled_kinds
from ssl_inpaint.errors import UserError
from ssl_inpaint.models.timm_unet import check_encoder_spec
from ssl_inpaint.models.transfer import ClassifierSpec
from ssl_inpaint.models.classifier import BN_STATS, FEATURES, WEIGHT_SCALES


MODES = ("finetune", "linear", "svm")
INITS = ("pretrained", "random", "datadep")  # besides a weights file (timm encoders)
DATADEP_IMAGES = 256  # training images (labels unused) a data-dependent init looks at: one batch, as Krähenbühl et al.


@dataclass
class FinetuneConfig(DistributedOptions, PrecisionOptions, RuntimeOptions, RunOptions):
    # run
    name: str = option("", "Run name prefix: runs are NAME_<init>_s<seed> (default NAME: the recipe's file name, else <dataset>_<mode>_<budget>).", protocol=False)
    seeds: str = option("", "Comma-separated seeds: one run per seed (overrides --seed).", protocol=False)
    # data
    dataset: str = option("voc", f"Dataset: {', '.join(labelled_kinds())}.", protocol=True)
    data: str = option("", "Dataset root (VOCdevkit, Fashion-MNIST files, CIFAR-10's official batches, or an ImageFolder root).", protocol=False)
    year: str = option("2007", "VOC year.", protocol=True)
    train_split: str = option("", "Training split (empty: the dataset's own, VOC trainval, every other kind train; a folder's sub-folder).", protocol=True)
    test_split: str = option("", "Evaluation split (empty: the dataset's own, test; a folder's sub-folder, e.g. val for Imagenette).", protocol=True)
    voc_labels: str = option("xml", "VOC targets from the xml annotations or ImageSets/Main/<class>_<split>.txt (imagesets).", protocol=True)
    image_size: int = option(128, "Crop side in pixels. Any multiple of the U-Net's total stride with --features pooled or multi; --features latent (the latent conv covers the whole deepest map) needs the pretraining size.", at_least(8, MAX_SIDE), protocol=True)
    # model
    encoder: str = option("unet", "unet (the seed-003 encoder + head) or timm:<name> (timm's own classifier, e.g. timm:resnet50).", protocol=True)
    init: str = option("pretrained", "pretrained (the encoder of --checkpoint), random (same architecture, PyTorch's default init), datadep (same architecture, a data-dependent init with no pretext: k-means first layer, per-layer rescaling; Krähenbühl et al. 2016), or a local weights file for a timm model (e.g. supervised ImageNet weights).", protocol=False)
    checkpoint: str = option("", "A pretrain run folder or its encoder.pt (for random init: only its architecture is used).", protocol=False)
    bottleneck_channels: int = option(4000, "Latent channels of a random encoder built without --checkpoint.", at_least(1, MAX_WIDTH), protocol=True)
    features: str = option("latent", f"Features for the head: {', '.join(FEATURES)}.", protocol=True)
    hidden: int = option(512, "Hidden units of the finetune head.", at_least(1, MAX_WIDTH), protocol=True)
    dropout: float = option(0.5, "Dropout of the finetune head.", Range(0, 1, high_open=True), protocol=True)
    # protocol
    mode: str = option("finetune", f"{', '.join(MODES)}.", protocol=True)
    labels_per_class: int = option(0, "Label budget: training images per class (0: all).", at_least(0), protocol=True)
    label_fraction: float = option(0.0, "Label budget: fraction of each class's training images (0: all).", UNIT, protocol=True)
    data_seed: int = option(0, "Seed of the label-budget subset (kept fixed across inits and seeds).", SEEDS, protocol=True)
    val_per_class: int = option(0, "Validation: score every evaluation also on N held-out images per class of the training split, none of them labelled for training (val_value in metrics.json; ssl compare --choose-by-val picks each init's protocol by it, not by the test split). 0: none. The test figures are the same with or without it.", at_least(0), protocol=False)
    epochs: int = option(14, "Training epochs (finetune and linear).", at_least(1), protocol=True)
    batch_size: int = option(64, "Images per step.", at_least(2, MAX_WIDTH), protocol=True)
    optimizer: str = option("sgd", "sgd (momentum) or adam.", protocol=True)
    lr: float = option(0.005, "Learning rate.", positive(10), protocol=True)
    momentum: float = option(0.9, "SGD momentum.", Range(0, 1, high_open=True), protocol=True)
    weight_decay: float = option(5e-4, "Weight decay.", at_least(0, 10), protocol=True)
    lr_schedule: str = option("constant", "constant or cosine.", protocol=True)
    augment: str = option(DEFAULT_AUGMENT, f"finetune: training augmentations, comma-separated: {', '.join(AUGMENTATIONS)}, or none.", protocol=True)
    mixup: float = option(0.0, "finetune: timm's Mixup: each batch's images and labels mixed in pairs with a weight drawn from Beta(a, a) (MAE's fine-tuning: 0.8); 0: off. Single-label datasets.", at_least(0, 100), protocol=True)
    cutmix: float = option(0.0, "finetune: timm's CutMix alpha: a box of another image pasted in, the labels mixed by its area (MAE's fine-tuning: 1.0; with --mixup each batch takes one of the two); 0: off.", at_least(0, 100), protocol=True)
    bn_stats: str = option("running", "running: the encoder's BatchNorm statistics as loaded; clean: re-estimated on --bn-images clean training images first (both inits alike).", protocol=True)
    bn_images: int = option(2048, "Images of the training split (labels unused) for --bn-stats clean.", at_least(2), protocol=True)
    head_warmup_epochs: int = option(0, "finetune: the first N of --epochs train the head alone on the frozen encoder, then every layer.", at_least(0), protocol=True)
    weight_scale: str = option("loaded", f"finetune: {', '.join(WEIGHT_SCALES)}. init: before training, every conv feeding a BatchNorm is rescaled to PyTorch's default-init weight norm (no output changes; the same effective SGD step for every init: a pretext leaves deep convs 4-7x larger).", protocol=True)
    l2sp: float = option(0.0, "finetune: L2-SP (Li et al. 2018): add alpha/2 x the squared distance of the encoder's kernels from where fine-tuning started (the pretext's weights, a baseline's init) to the loss, pulling them back towards it; --weight-decay still applies; the logged loss is the classification loss alone. 0: off.", at_least(0, 100), protocol=True)
    layer_decay: float = option(1.0, "finetune: layer-wise learning-rate decay; encoder stage i of n trains at lr x decay^(n + 1 - i), the head at lr.", positive(1), protocol=True)
    svm_costs: str = option("0.01,0.1,1,10,100", "svm: cost grid searched per class by 3-fold cross-validated AP.", protocol=True)
    eval_every: int = option(1, "Evaluate on the test split every N epochs (and at the end).", at_least(1), protocol=False)
    log_every: int = option(10, "Without a terminal (a log file), print a progress line every N steps.", at_least(1), protocol=False)
    # scale-out
    resume: bool = option(True, "Continue an interrupted run from its checkpoints/last.pt (saved every epoch); --no-resume refuses.", protocol=False)

    def validate(self) -> None:
        if self.init == "datadep" and self.encoder != "unet":
            raise UserError("--init datadep initialises the staged U-Net encoder: use --encoder unet")
        if self.init not in INITS:
            if not self.encoder.startswith("timm:"):
                raise UserError(f"--init must be one of {', '.join(INITS)} for --encoder unet, got {self.init!r}")
            if not Path(self.init).is_file():
                raise UserError(f"--init must be pretrained, random or a weights file; {self.init!r} is none of these")
        choices = {
            "dataset": labelled_kinds(), "mode": MODES,
            "features": FEATURES, "optimizer": ("sgd", "adam"), "lr_schedule": ("constant", "cosine"),
            "voc_labels": ("xml", "imagesets"), "bn_stats": BN_STATS, "weight_scale": WEIGHT_SCALES,
        }
        check_choices(self, choices)
        # the dataset's own splits, resolved here so the saved config and the protocol name them
        default_train, default_test = DATASETS.get(self.dataset).transfer_splits
        self.train_split, self.test_split = self.train_split or default_train, self.test_split or default_test
        self.check_precision_name()
        check_encoder_spec(self.encoder)
        _ = self.augmentations  # parses --augment
        if (self.layer_decay != 1 or self.head_warmup_epochs or self.l2sp) and self.encoder != "unet":
            raise UserError("--layer-decay, --head-warmup-epochs and --l2sp need the U-Net encoder's stages apart from its head: use --encoder unet")
        if self.l2sp and self.mode != "finetune":
            raise UserError(f"--l2sp pulls fine-tuned encoder weights towards their start; --mode {self.mode} trains no encoder weight: drop it")
        if self.mixes and (self.mode != "finetune" or DATASETS.get(self.dataset).multilabel):
            raise UserError("--mixup and --cutmix mix training images and their single labels: use them with --mode finetune on a single-label dataset")
        if self.head_warmup_epochs >= self.epochs:
            raise UserError(f"--head-warmup-epochs ({self.head_warmup_epochs}) must be below --epochs ({self.epochs}): the network trains after the head")
        if self.init == "pretrained" and not self.checkpoint:
            raise UserError("--init pretrained needs --checkpoint runs/<pretrain run> (or its encoder.pt)")
        if self.labels_per_class and self.label_fraction:
            raise UserError("give either --labels-per-class or --label-fraction, not both")
        _ = self.seed_list  # parses --seeds
        _ = self.cost_grid  # parses --svm-costs

    @property
    def mixes(self) -> bool:
        return bool(self.mixup or self.cutmix)

    @property
    def augmentations(self) -> tuple[str, ...]:
        return parse_augment(self.augment)

    @property
    def seed_list(self) -> list[int]:
        if not self.seeds:
            return [self.seed]
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s.strip()]
        except ValueError:
            seeds = []
        if not seeds or any(seed not in SEEDS for seed in seeds):
            raise UserError(f"--seeds must be comma-separated integers {SEEDS.describe()}, got {self.seeds!r}")
        return seeds

    @property
    def cost_grid(self) -> list[float]:
        try:
            costs = [float(c) for c in self.svm_costs.split(",")]
        except ValueError:
            costs = []
        if not costs or min(costs) <= 0:
            raise UserError(f"--svm-costs must be positive numbers, got {self.svm_costs!r}")
        return costs

    def classifier_spec(self) -> ClassifierSpec:
        return ClassifierSpec(
            self.encoder, self.init, self.checkpoint, self.image_size, self.features, self.hidden, self.dropout,
            linear=self.mode == "linear", bottleneck_channels=self.bottleneck_channels,
        )

    @property
    def init_label(self) -> str:
        """pretrained, random, datadep, or weights-<file stem> for --init FILE (used in run names and tables)."""
        return self.init if self.init in INITS else f"weights-{Path(self.init).stem}"

    @property
    def budget(self) -> str:
        if self.labels_per_class:
            return f"{self.labels_per_class}-per-class"
        if self.label_fraction:
            return f"{self.label_fraction:g}-fraction"
        return "all"


def protocol_settings(config: FinetuneConfig) -> dict[str, Any]:
    """The settings that define what a transfer run measures (each option's ``protocol`` decision):
    ``ssl compare`` only sets a pretrained run against baseline runs of the same protocol and encoder."""
    return {name: getattr(config, name) for name in fields_deciding(FinetuneConfig, "protocol")}


def run_prefix(config: FinetuneConfig) -> str:
    """The --name the runs of one command share (their folder names less _<init>_s<seed>)."""
    suffix = f"_{config.init_label}_s{config.seed}"
    return config.name[: -len(suffix)] if config.name.endswith(suffix) else config.name
