"""The options of ``ssl pixelcnn``: the lower-half likelihood model, its data and training, and what a
resumed run may change (``RESUMABLE``)."""

from __future__ import annotations

from dataclasses import dataclass

from ssl_inpaint.config import at_least, check_choices, fields_deciding, MAX_WIDTH, option, positive, Range, RunOptions, RuntimeOptions
from ssl_inpaint.data import DATASETS, SourceOptions
from ssl_inpaint.errors import UserError


@dataclass
class PixelCNNConfig(SourceOptions, RuntimeOptions, RunOptions):
    dataset: str = option("folder", f"Dataset kind: {DATASETS.choices()}.", resume=False)
    split: str = option("train", "Split to train on.", resume=False)
    val_images: int = option(16, "Held-out images for validation bits/dim and samples.", at_least(1, 4096), resume=False)
    image_size: int = option(32, "Image side in pixels (a multiple of 4; seed 002: 32).", at_least(4, 1024), resume=False)
    filters: int = option(160, "Channels of every convolution.", at_least(1, MAX_WIDTH), resume=False)
    blocks: int = option(5, "Gated ResNet blocks per stage.", at_least(1, 64), resume=False)
    components: int = option(10, "Logistic mixture components per pixel.", at_least(1, 256), resume=False)
    dropout: float = option(0.5, "Dropout inside the gated ResNet blocks.", Range(0, 1, high_open=True), resume=False)
    batch_size: int = option(12, "Images per step.", at_least(1, MAX_WIDTH), resume=False)
    epochs: int = option(1, "Passes over the training images.", at_least(1), resume=True)
    max_steps: int = option(0, "Stop after this many steps (0: run all epochs).", at_least(0), resume=True)
    lr: float = option(1e-3, "Adam learning rate.", positive(10), resume=False)
    lr_decay: float = option(0.999995, "Learning rate multiplied by this after every step.", positive(1), resume=False)
    log_every: int = option(10, "Log the training bits/dim every N steps.", at_least(1), resume=True)
    sample_every: int = option(1000, "Validation bits/dim and sampled lower halves every N steps (and at the end).", at_least(1), resume=True)
    sample_images: int = option(4, "Validation images whose lower half is sampled (one forward pass per pixel each time).", at_least(1, 4096), resume=False)
    resume: bool = option(True, "Continue from checkpoints/last.pt (saved at the end, or when a signal stops the run); --no-resume refuses to touch it.", resume=True)

    def validate(self) -> None:
        check_choices(self, {"dataset": DATASETS.names()})
        if self.image_size % 4:
            raise UserError(f"--image-size must be a multiple of 4, got {self.image_size}")
        if self.sample_images > self.val_images:
            raise UserError("--sample-images cannot exceed --val-images")


# What a resumed ssl pixelcnn run may change (each option's ``resume`` decision): how long it runs, how
# often it logs, where and on what.
RESUMABLE = fields_deciding(PixelCNNConfig, "resume")
