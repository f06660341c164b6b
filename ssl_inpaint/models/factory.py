"""Building the inpainting networks by name: generators, discriminators, and a trained generator
rebuilt from its run. ``ModelOptions`` are the config fields that choose them (``--generator``,
``--discriminator``, ``--skips`` ...), shared by ``ssl pretrain`` and everything that reloads its runs.

Where is the discriminator chosen? ``DISCRIMINATORS`` below: one builder per ``--discriminator`` name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ssl_inpaint.checkpoint import PRETRAIN_FORMAT, last_checkpoint, load_checkpoint
from ssl_inpaint.config import at_least, MAX_SIDE, MAX_WIDTH, option, Range
from ssl_inpaint.errors import UserError
from ssl_inpaint.models.approx_attention import ApproxAttentionGenerator
from ssl_inpaint.models.discriminators import (
    D_POOLS,
    GlcicFusedDiscriminator,
    global_discriminator,
    local_discriminator,
    patchgan_discriminator,
    pixel_discriminator,
)
from ssl_inpaint.models.glcic import GlcicGenerator
from ssl_inpaint.models.perceptual_unet import PerceptualUNetGenerator
from ssl_inpaint.models.pix2pix import Pix2PixUNetGenerator
from ssl_inpaint.models.timm_unet import TimmUNetGenerator, check_encoder_spec
from ssl_inpaint.models.unet import NORMS, SKIPS, UNET_WIDTHS, UNetGenerator
from ssl_inpaint.models.vgg import VGG16Discriminator
from ssl_inpaint.registry import Registry
from ssl_inpaint.runtime import unwrap

GENERATORS: Registry[Callable[..., nn.Module]] = Registry("generator", "--generator")
GENERATORS.add("unet", UNetGenerator)  # seed 003
GENERATORS.add("glcic", GlcicGenerator)  # seed 000
GENERATORS.add("approx_attention", ApproxAttentionGenerator)  # seed 001
GENERATORS.add("pix2pix_unet", Pix2PixUNetGenerator)  # seed 002
GENERATORS.add("perceptual_unet", PerceptualUNetGenerator)  # seed 004

# A discriminator builder returns (whole-image discriminator, crop discriminator); glcic_fused is one
# module in the first slot that sees both.
Pair = tuple[Optional[nn.Module], Optional[nn.Module]]
DISCRIMINATORS: Registry[Callable[["ModelOptions", int], Pair]] = Registry("discriminator", "--discriminator")


@dataclass
class ModelOptions:
    """The networks of an inpainting run, as config fields (every ``ssl pretrain`` recipe sets some)."""

    image_size: int = option(128, "Training crop side in pixels (a multiple of 32); the networks are built for it.", at_least(8, MAX_SIDE), resume=False)
    generator: str = option("unet", f"Generator architecture: {GENERATORS.choices()}.", resume=False)
    encoder: str = option("unet", "Generator encoder: unet (seed 003, Table 1) or timm:<name>, e.g. timm:resnet50, timm:convnext_tiny.", resume=False)
    bottleneck_channels: int = option(4000, "Channels of the generator's 1x1 latent.", at_least(1, MAX_WIDTH), resume=False)
    widths: str = option(
        ",".join(map(str, UNET_WIDTHS)),
        "--encoder unet: the encoder's stage widths, shallow to deep, comma-separated; each stage is one 4x4 stride-2 conv, so "
        "--image-size must be a multiple of 2^stages (Table 1: 64,64,128,256,512; e.g. 128,128,256,512 keeps a 2x2 map at 32 px).",
        resume=False,
    )
    skips: str = option(
        "all",
        f"U-Net skips ({', '.join(SKIPS)}): all (Table 1), none (context encoder, seed 003 model M3), or masked "
        "(SparK: positions touching the hole replaced by a learned token, so the hole must go through the latent).",
        resume=False,
    )
    sparse_stages: int = option(
        0,
        "--generator unet: run the encoder's first N stages on the context only (SparK): after each, positions whose "
        "input cell holds a hole pixel are zeroed and its BatchNorm statistics come from the others. Pretraining only; "
        "choose 2^N <= the hole patch (--patch-size), as deeper cells would all touch a hole.",
        at_least(0, 16),
        resume=False,
    )
    decoder_scale: float = option(
        1.0,
        "--generator unet: the decoder's stage widths as a multiple of the encoder's (1: the mirror of Table 1; "
        "below 1 a lighter decoder, as MAE's, leaves more of the reconstruction to the encoder). Pretraining only: "
        "transfer keeps the encoder.",
        Range(1 / 16, 4),
        resume=False,
    )
    predict: str = option("image", "image: the generator outputs the whole image; hole: only the centre square (M3).", resume=False)
    norm: str = option("batch", "Normalisation in generator and discriminators: batch (Tables 1-2) or none.", resume=False)
    global_d: bool = option(True, "Use the global discriminator.", resume=False)
    local_d: bool = option(True, "Use the local discriminator (on a crop around the hole).", resume=False)
    local_size: int = option(0, "Local discriminator crop side in pixels (0: half the image side).", at_least(0, MAX_SIDE), resume=False)
    discriminator: str = option(
        "table2",
        "table2: seed-003 global/local discriminators; glcic_fused: seed-000 global + local trunks fused into one "
        "logit (needs --global-d --local-d); patchgan or pixel: pix2pix's (seed 002); vgg16: frozen ImageNet VGG16 "
        "convs + dense 128-128-1 (seed 004, needs --vgg-weights). The last three judge the whole image (--no-local-d).",
        resume=False,
    )
    d_pool: str = option("flatten", f"glcic_fused: {', '.join(D_POOLS)} (GLCIC, or global average pooling) before the fully connected layer.", resume=False)
    base_channels: int = option(64, "First-layer width of the glcic, approx_attention, pix2pix_unet and perceptual_unet generators and of the glcic_fused, patchgan and pixel discriminators.", at_least(2, MAX_WIDTH), resume=False)
    approx_hidden: int = option(512, "approx_attention: width of ApproxNet's two hidden dense layers.", at_least(1, MAX_WIDTH), resume=False)

    @property
    def unet_widths(self) -> tuple[int, ...]:
        """``--widths`` as integers, checked."""
        try:
            values = tuple(int(v) for v in self.widths.split(","))
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            raise UserError(f"--widths must be positive integers separated by commas, e.g. 64,64,128,256,512, got {self.widths!r}")
        return values

    @property
    def adversarial(self) -> bool:
        return self.global_d or self.local_d

    @property
    def resolved_local_size(self) -> int:
        return self.local_size or self.image_size // 2

    def model_choices(self) -> dict[str, tuple[str, ...]]:
        """The named choices among these fields, for ``config.check_choices``."""
        return {
            "generator": GENERATORS.names(),
            "predict": ("image", "hole"),
            "discriminator": DISCRIMINATORS.names(),
            "d_pool": D_POOLS,
            "norm": NORMS,
            "skips": SKIPS,
        }

    def check_model(self) -> None:
        """The combinations the generators and discriminators can be built with."""
        check_encoder_spec(self.encoder)
        stride = 2 ** len(self.unet_widths)
        if self.generator == "unet" and self.encoder == "unet" and (self.image_size % stride or self.image_size < stride):
            raise UserError(f"--image-size must be a positive multiple of {stride} (2^stages of --widths {self.widths}), got {self.image_size}")
        if self.widths != ",".join(map(str, UNET_WIDTHS)) and (self.generator != "unet" or self.encoder != "unet"):
            raise UserError("--widths sets the stages of --generator unet with --encoder unet")
        if self.decoder_scale != 1 and (self.generator != "unet" or self.encoder != "unet"):
            raise UserError("--decoder-scale sizes the decoder of --generator unet with --encoder unet")
        if self.sparse_stages and (self.generator != "unet" or self.encoder != "unet"):
            raise UserError("--sparse-stages applies to --generator unet with --encoder unet")
        if self.sparse_stages > len(self.unet_widths):
            raise UserError(f"--sparse-stages must be at most the {len(self.unet_widths)} stages of --widths {self.widths}, got {self.sparse_stages}")
        if self.encoder != "unet" and (self.predict != "image" or self.norm != "batch"):
            raise UserError("--predict hole and --norm none apply to --encoder unet only (--skips all|none|masked work with timm encoders)")
        if self.generator != "unet" and (
            self.encoder != "unet" or self.predict != "image" or self.skips != "all" or self.norm != "batch"
        ):
            raise UserError("--encoder timm:..., --predict hole, --skips none|masked and --norm none apply to --generator unet only")
        if self.local_d and self.resolved_local_size > self.image_size:
            raise UserError("--local-size cannot exceed --image-size")
        check = getattr(DISCRIMINATORS.get(self.discriminator), "check", None)  # the discriminator's own (see ``refuses``)
        if check is not None:
            check(self)

    @classmethod
    def saved_values(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """The keys of ``cls`` in a run's saved config, with the keys of older versions translated
        (``skip_connections: false`` became ``skips: none``) and unknown ones dropped."""
        values = dict(saved)
        if "skip_connections" in values and "skips" not in values:
            values["skips"] = "all" if values.pop("skip_connections") else "none"
        known = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in values.items() if k in known}


def create_generator(name: str, encoder: str = "unet", **kwargs: Any) -> nn.Module:
    """Build a generator by registry name; every generator exposes ``.encoder`` for transfer.

    ``encoder='timm:<name>'`` puts a timm backbone under a U-Net decoder instead of the seed-003 encoder.
    """
    if encoder.startswith("timm:"):
        return TimmUNetGenerator(encoder[len("timm:"):], kwargs["image_channels"], kwargs["image_size"], kwargs.get("skips", "all"))
    if encoder != "unet":
        raise UserError(f"--encoder must be unet or timm:<model name>, got {encoder!r}")
    return GENERATORS.get(name)(**kwargs)


def make_generator(options: ModelOptions, image_channels: int) -> nn.Module:
    if options.generator == "unet":
        return create_generator(
            "unet",
            encoder=options.encoder,
            image_channels=image_channels,
            image_size=options.image_size,
            bottleneck_channels=options.bottleneck_channels,
            widths=options.unet_widths,
            skips=options.skips,
            predict=options.predict,
            norm=options.norm,
            sparse_stages=options.sparse_stages,
            decoder_scale=options.decoder_scale,
        )
    return create_generator(
        options.generator,
        image_channels=image_channels,
        image_size=options.image_size,
        base_channels=options.base_channels,
        approx_hidden=options.approx_hidden,
    )


Builder = Callable[["ModelOptions", int], Pair]


def refuses(check: Callable[["ModelOptions"], None]) -> Callable[[Builder], Builder]:
    """Give a discriminator builder the check of the options it cannot honour (raising ``UserError``
    in one line); ``ModelOptions.check_model`` runs it when the command's flags are validated, before
    any run folder is written."""

    def attach(builder: Builder) -> Builder:
        builder.check = check  # type: ignore[attr-defined]
        return builder

    return attach


def _local_crop_fits_table2(options: ModelOptions) -> None:
    if options.local_d and options.resolved_local_size % 32:
        if not options.local_size:  # the user never chose it: say where the size comes from
            raise UserError(
                f"the local discriminator's crop defaults to half of --image-size {options.image_size} "
                f"({options.resolved_local_size} px), but it must be a multiple of 32: pass --local-size 32 "
                f"(at most --image-size) or --no-local-d"
            )
        raise UserError(f"--local-size must be a multiple of 32, got {options.resolved_local_size}")


def _both_discriminators(options: ModelOptions) -> None:
    if not (options.global_d and options.local_d):
        raise UserError("--discriminator glcic_fused is one global + local discriminator: keep --global-d --local-d")


def _whole_image_only(options: ModelOptions) -> None:
    if options.local_d or not options.global_d:
        raise UserError(f"--discriminator {options.discriminator} judges the whole image: use --global-d --no-local-d")


def _patchgan_fits(options: ModelOptions) -> None:
    _whole_image_only(options)
    if options.image_size < 24:
        raise UserError("--discriminator patchgan needs --image-size 24 or more (three stride-2 convs, then two 4x4 convs)")


@DISCRIMINATORS.register("table2")
@refuses(_local_crop_fits_table2)
def _table2(options: ModelOptions, image_channels: int) -> Pair:
    return (
        global_discriminator(image_channels, options.image_size, options.norm) if options.global_d else None,
        local_discriminator(image_channels, options.resolved_local_size, options.norm) if options.local_d else None,
    )


@DISCRIMINATORS.register("glcic_fused")
@refuses(_both_discriminators)
def _glcic_fused(options: ModelOptions, image_channels: int) -> Pair:
    size, local = options.image_size, options.resolved_local_size
    return GlcicFusedDiscriminator(image_channels, size, local, options.d_pool, options.base_channels, options.norm), None


@DISCRIMINATORS.register("patchgan")
@refuses(_patchgan_fits)
def _patchgan(options: ModelOptions, image_channels: int) -> Pair:
    return patchgan_discriminator(image_channels, options.base_channels, norm=options.norm), None


@DISCRIMINATORS.register("pixel")
@refuses(_whole_image_only)
def _pixel(options: ModelOptions, image_channels: int) -> Pair:
    return pixel_discriminator(image_channels, options.base_channels, norm=options.norm), None


@DISCRIMINATORS.register("vgg16")
@refuses(_whole_image_only)
def _vgg16(options: ModelOptions, image_channels: int) -> Pair:
    # A random trunk here; a new run loads the ImageNet weights, a resumed one its checkpoint.
    return VGG16Discriminator(options.image_size), None


def make_discriminators(options: ModelOptions, image_channels: int) -> Pair:
    """(whole-image discriminator, crop discriminator) for ``--discriminator``."""
    return DISCRIMINATORS.get(options.discriminator)(options, image_channels)


@dataclass
class InpaintingModels:
    generator: nn.Module
    global_d: Optional[nn.Module]
    local_d: Optional[nn.Module]
    local_size: int
    fused: bool = False  # global_d is seed 000's fused global + local discriminator
    features: Optional[nn.Module] = None  # frozen VGG16 for the perceptual / style losses

    @property
    def uses_crops(self) -> bool:
        """Whether a discriminator looks at the crop around the hole."""
        return self.local_d is not None or self.fused

    @property
    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.global_d, self.local_d) if d is not None]

    def train(self, mode: bool = True) -> None:
        for m in (self.generator, *self.discriminators):
            m.train(mode)

    def state_dicts(self) -> dict[str, Optional[dict]]:
        return {
            name: unwrap(m).state_dict() if m is not None else None
            for name, m in (("generator", self.generator), ("global_d", self.global_d), ("local_d", self.local_d))
        }

    def load_state_dicts(self, state: dict[str, Any]) -> None:
        for name, m in (("generator", self.generator), ("global_d", self.global_d), ("local_d", self.local_d)):
            if m is not None:
                unwrap(m).load_state_dict(state[name])


def make_models(options: ModelOptions, image_channels: int) -> InpaintingModels:
    # The generator is built first: the order fixes which random numbers initialise which weights, so
    # changing it would change every recorded result of a seed.
    generator = make_generator(options, image_channels)
    global_d, local_d = make_discriminators(options, image_channels)
    return InpaintingModels(
        generator=generator,
        global_d=global_d,
        local_d=local_d,
        local_size=options.resolved_local_size,
        fused=options.discriminator == "glcic_fused",
    )


def generator_checkpoint(run: str | Path) -> Path:
    """A pretrain run folder (its ``checkpoints/last.pt``) or a pretrain checkpoint file."""
    path = Path(run)
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.is_file():
        raise UserError(
            f"no trained generator at {path}: pass a pretrain run folder (runs/NAME, with checkpoints/last.pt) "
            f"or one of its checkpoint files"
        )
    if path.name == "encoder.pt":
        raise UserError(f"{path} holds only the encoder; pass the pretrain run folder, whose checkpoints hold the generator")
    return path


@dataclass
class TrainedGenerator:
    generator: nn.Module
    options: ModelOptions
    config: dict[str, Any]  # the run's whole saved config (its mask settings, ...)
    image_channels: int
    fill: torch.Tensor  # the hole's fill value in the generator's input


def load_generator(run: str | Path) -> TrainedGenerator:
    """Rebuild the generator of a pretrain run from its saved config and weights (no unpickling)."""
    path = generator_checkpoint(run)
    state = load_checkpoint(path, PRETRAIN_FORMAT)
    options = ModelOptions(**ModelOptions.saved_values(state["config"]))
    channels = int(state["image_channels"])
    generator = make_generator(options, channels)
    try:
        generator.load_state_dict(state["generator"])
    except RuntimeError as exc:
        raise UserError(f"{path}: the generator weights do not match its saved config ({str(exc).splitlines()[0]})") from None
    fill = torch.tensor(state["fill"], dtype=torch.float32)
    return TrainedGenerator(generator, options, state["config"], channels, fill)
