"""The options of ``ssl pretrain``: every flag and recipe key of the pretext, its default, domain, help
and resume decision, and the checks across options (``PretrainConfig.validate``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ssl_inpaint.config import at_least, check_choices, fields_deciding, DistributedOptions, MAX_WIDTH, option, positive, PrecisionOptions, Range, RunOptions, RuntimeOptions
from ssl_inpaint.data import DATASETS, SourceOptions
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks import CentreSquare, MASKS, MaskOptions
from ssl_inpaint.probe import ProbeOptions
from ssl_inpaint.gan_step import SCHEDULES
from ssl_inpaint.models import ModelOptions


@dataclass
class PretrainConfig(ProbeOptions, ModelOptions, MaskOptions, SourceOptions, DistributedOptions, PrecisionOptions, RuntimeOptions, RunOptions):
    # data (the source: SourceOptions)
    val_split: str = option("", "Split for the fixed validation batch; empty: hold out --val-images training images.", resume=False)
    val_images: int = option(16, "Size of the fixed validation batch (PSNR/SSIM/L1 and image grids).", at_least(1, 4096), resume=False)
    reduced_decode: bool = option(True, "Decode JPEGs at 1/2, 1/4 or 1/8 size when the crop still fits (libjpeg DCT scaling, 2-4x faster loading of large photos); --no-reduced-decode decodes every pixel.", resume=True)
    crop_scale: float = option(1.0, "Random resized crops in training: each crop covers a fraction of the (resized) image's area drawn from [crop-scale, 1], aspect 3/4-4/3, resized to --image-size (MAE: 0.2); 1: the plain random square crop.", positive(1), resume=False)
    cache_mb: int = option(1024, "Keep decoded, resized training images in RAM, up to this many MB per loading process, so later epochs skip decoding them (identical pixels); 0: decode every time. In-memory datasets (Fashion-MNIST) are always kept.", at_least(0, 2**20), resume=True)
    # masks (the hole family and its parameters come from MaskOptions)
    fill: str = option("zero", "Value in the hole of the input: zero (0 in the [-1,1] input, mid-grey) or mean (dataset mean).", resume=False)
    # losses
    recon_loss: str = option("mse", "Reconstruction loss: mse or l1.", resume=False)
    w_known: float = option(0.9, "Weight w1 of the reconstruction loss on known pixels.", at_least(0), resume=False)
    w_hole: float = option(0.1, "Weight w2 of the reconstruction loss in the hole.", at_least(0), resume=False)
    w_adv_global: float = option(1e-5, "Weight w3 of the global adversarial loss.", at_least(0), resume=False)
    w_adv_local: float = option(1e-5, "Weight w4 of the local adversarial loss.", at_least(0), resume=False)
    norm_pix_loss: bool = option(False, "MAE's norm_pix_loss: the hole loss on per-patch normalised targets (patches of --patch-size px).", resume=False)
    w_perceptual: float = option(0.0, "Weight of the VGG16 perceptual loss on the completed image (needs --vgg-weights).", at_least(0), resume=False)
    w_style: float = option(0.0, "Weight of the VGG16 style (Gram matrix) loss on the completed image (needs --vgg-weights).", at_least(0), resume=False)
    vgg_weights: str = option("", "File holding a torchvision vgg16 state dict, for --w-perceptual / --w-style and --discriminator vgg16 (never downloaded).", resume=False)
    init_from: str = option("", "Start the encoder from these weights, the rest fresh: an earlier run's encoder.pt (or run folder) of the same architecture, or a timm state dict (.pth/.safetensors, e.g. supervised ImageNet weights) for --encoder timm:<name>.", resume=False)
    # optimisation
    batch_size: int = option(64, "Images per step.", at_least(2, MAX_WIDTH), resume=True)
    epochs: int = option(10, "Passes over the training images.", at_least(1), resume=True)
    max_steps: int = option(0, "Stop after this many steps (0: run all epochs).", at_least(0), resume=True)
    optimizer: str = option("adam", "adam (L2 weight decay, the seeds') or adamw (decoupled weight decay, MAE's) for both G and D.", resume=False)
    lr_g: float = option(2e-3, "Generator learning rate (Adam).", positive(10), resume=False)
    lr_d: float = option(1e-3, "Discriminators' learning rate (Adam).", positive(10), resume=False)
    beta1: float = option(0.5, "Adam beta1.", Range(0, 1, high_open=True), resume=False)
    beta2: float = option(0.999, "Adam beta2.", Range(0, 1, high_open=True), resume=False)
    adam_eps: float = option(1e-8, "Adam epsilon.", positive(1), resume=False)
    weight_decay: float = option(0.0, "Weight decay of both optimizers.", at_least(0, 10), resume=False)
    lr_schedule: str = option("constant", "constant or cosine (with --warmup-steps linear warm-up).", resume=False)
    warmup_steps: int = option(0, "Linear learning-rate warm-up steps.", at_least(0), resume=False)
    schedule: str = option(
        "joint",
        "joint: G and D every step; glcic: reconstruction, discriminator, joint phases; two_stage: joint, then G alone "
        "against the frozen D (seed 004); approx_then_refine: ApproxNet alone, then the refiner with the GAN (seed 001).",
        resume=False,
    )
    stage_fraction: float = option(0.5, "two_stage / approx_then_refine: fraction of the run spent in the first stage.", Range(0, 1, low_open=True, high_open=True), resume=False)
    phase_fractions: str = option("0.2,0.5,0.3", "glcic: fractions of the three phases, comma-separated.", resume=False)
    phase_scope: str = option("run", "glcic: phases span the whole run, or repeat in every epoch (seed 000).", resume=False)
    # scale-out
    accumulate: int = option(1, "Gradient accumulation: micro-batches of --batch-size per optimizer step.", at_least(1, 4096), resume=True)
    channels_last: bool = option(False, "Use the channels_last memory format (faster convolutions on recent GPUs).", resume=True)
    compile: bool = option(False, "torch.compile the generator and discriminators.", resume=True)
    resume: bool = option(True, "Continue from checkpoints/last.pt if the run folder has one (--no-resume: refuse to touch it).", resume=True)
    # outputs
    log_every: int = option(10, "Log scalars (and, without a terminal, a progress line) every N steps.", at_least(1), resume=True)
    sample_every: int = option(200, "Validation metrics and an image grid every N steps (and at the end).", at_least(1), resume=True)
    save_every_steps: int = option(1000, "Refresh checkpoints/last.pt every N steps (0: only at epoch ends).", at_least(0), resume=True)
    save_every_epochs: int = option(5, "Keep checkpoints/epoch_N.pt every N epochs (0: never).", at_least(0), resume=True)

    def validate(self) -> None:
        choices = {
            "dataset": DATASETS.names(),
            "mask": MASKS.names(),
            "fill": ("zero", "mean"),
            "recon_loss": ("mse", "l1"),
            "optimizer": ("adam", "adamw"),
            "lr_schedule": ("constant", "cosine"),
            "schedule": SCHEDULES,
            "phase_scope": ("run", "epoch"),
        }
        check_choices(self, {**choices, **self.model_choices()})
        self.resolve_split()
        self.check_precision_name()
        self.check_model()
        self._validate_other_systems()
        if self.norm_pix_loss and (self.recon_loss != "mse" or self.patch_size < 1):
            raise UserError("--norm-pix-loss is a squared error on patches: use --recon-loss mse and --patch-size >= 1")
        if self.sparse_stages and self.mask == "patches" and 2**self.sparse_stages > self.patch_size:
            raise UserError(
                f"--sparse-stages {self.sparse_stages} makes cells of {2**self.sparse_stages} px, larger than the "
                f"{self.patch_size} px hole patches, so nearly every cell would touch a hole: use --sparse-stages at most "
                f"{max(0, self.patch_size.bit_length() - 1)}"
            )
        if self.predict == "hole" and self.mask_family() != CentreSquare(size=0.5):
            raise UserError("--predict hole decodes the centre square only: use --mask centre --centre-size 0.5")
        if self.predict == "hole" and self.skips != "none":
            raise UserError("--predict hole is the no-skip model M3: add --skips none")
        if self.mask_needs_objects and not self.dataset_has_objects:
            raise UserError(f"--mask {self.mask} needs object annotations: use --dataset coco")
        if self.schedule == "glcic" and not self.adversarial:
            raise UserError("--schedule glcic needs a discriminator: enable --global-d or --local-d")
        _ = self.fractions  # parses and checks --phase-fractions
        if self.warmup_steps and self.lr_schedule == "constant":
            raise UserError("--warmup-steps needs --lr-schedule cosine")
        self.check_probe()

    def _validate_other_systems(self) -> None:
        """The combinations the seed-000/001/002/004 models and schedules need."""
        if (self.generator == "approx_attention") != (self.schedule == "approx_then_refine"):
            raise UserError("--generator approx_attention and --schedule approx_then_refine go together (ApproxNet trains in the first stage)")
        if self.schedule == "two_stage" and not self.adversarial:
            raise UserError("--schedule two_stage needs a discriminator: enable --global-d or --local-d")
        if (self.w_perceptual or self.w_style or self.discriminator == "vgg16") and not self.vgg_weights:
            raise UserError(
                "--w-perceptual/--w-style and --discriminator vgg16 need VGG16 weights: pass --vgg-weights PATH "
                "(a torchvision vgg16 state dict)"
            )

    @property
    def fractions(self) -> tuple[float, float, float]:
        try:
            values = tuple(float(v) for v in self.phase_fractions.split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
            raise UserError(f"--phase-fractions must be three non-negative numbers summing to 1, got {self.phase_fractions!r}")
        return values  # type: ignore[return-value]


# What a resumed run may change is each option's ``resume`` decision (config.option): how long it runs,
# how it logs and saves, how fast it computes. Any other difference from the checkpoint (data, model,
# masks, losses, optimizer hyper-parameters held in the restored state) would either be silently
# overridden by that state or change what the run means half-way, so resuming refuses it and names the
# keys. The batch settings may change only as long as the global batch stays the same (checked
# separately). Accepted changes are recorded.
RESUMABLE = fields_deciding(PretrainConfig, "resume")
