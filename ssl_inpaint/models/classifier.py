"""The transfer model: the pretext encoder (the very module used in pretraining) + a classification head.

Seed 003 (section 6.2) put pooling, fully connected layers and dropout on top of the generator's
encoder. Features are either the encoder's 1x1 latent (``latent``: the whole pretrained encoder is
used), the global-average-pooled deepest conv map (``pooled``), or the pooled maps of the three
deepest conv stages concatenated (``multi``). The encoder still takes the hole channel; a classifier
feeds it zeros, i.e. "no pixel is missing", which is what the pretext showed it for every known pixel.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.encoders import build_encoder
from ssl_inpaint.models.unet import UNetEncoder

FEATURES = ("latent", "pooled", "multi")
# BatchNorm statistics a frozen encoder is used with: as loaded, or re-estimated on clean images.
BN_STATS = ("running", "clean")
# ``multi`` concatenates the pooled maps of this many deepest conv stages (the latent excluded): the
# mid-level maps keep information a 1x1 latent trained to redraw the image may not.
MULTI_STAGES = 3


def feature_dim(encoder: nn.Module, features: str) -> int:
    """Width of the vector ``encoder_features`` returns for ``features``."""
    if features == "latent":
        return encoder.out_channels[-1]
    if features == "pooled":
        return encoder.out_channels[-2]
    return sum(encoder.out_channels[-1 - MULTI_STAGES : -1])


def encoder_maps(encoder: nn.Module, inputs: torch.Tensor, features: str) -> list[Optional[torch.Tensor]]:
    """The encoder's maps, shallow to deep, for ``inputs`` (image + hole channel). Features that do not
    use the latent skip it where the encoder can (``conv_maps``; the list keeps its place as None), so
    they work at image sizes other than the pretraining one (size-free transfer)."""
    if features != "latent" and hasattr(encoder, "conv_maps"):
        return [*encoder.conv_maps(inputs), None]
    return encoder(inputs)


def encoder_features(encoder: nn.Module, images: torch.Tensor, features: str) -> torch.Tensor:
    """(B, feature_dim) features of images in [-1, 1]. The encoder still takes the hole channel; a
    classifier feeds it zeros, i.e. "no pixel is missing"."""
    no_hole = torch.zeros_like(images[:, :1])
    maps = encoder_maps(encoder, torch.cat([images, no_hole], dim=1), features)
    if features == "latent":
        chosen = [maps[-1]]
    elif features == "pooled":
        chosen = [maps[-2]]
    else:
        chosen = maps[-1 - MULTI_STAGES : -1]
    return torch.cat([m.mean(dim=(2, 3)) for m in chosen], dim=1)


@torch.no_grad()
def reestimate_batchnorm(encoder: nn.Module, batches: Iterable[torch.Tensor], features: str = "latent") -> int:
    """Replace the running statistics of every BatchNorm layer of ``encoder`` by their average over
    ``batches`` of clean images (no hole), so the features a classifier sees are not normalised with
    statistics of holed pretext inputs. ``features``: the maps that will be used (a skipped latent
    keeps its statistics). Returns the number of images used; the module's train/eval mode is restored."""
    skipped = encoder.bottleneck if features != "latent" and hasattr(encoder, "conv_maps") else nn.Identity()
    in_skipped = {id(m) for m in skipped.modules()}
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in in_skipped]
    if not norms:
        return 0
    was_training = encoder.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, whatever their number
    encoder.train()
    seen = 0
    for images in batches:
        encoder_maps(encoder, torch.cat([images, torch.zeros_like(images[:, :1])], dim=1), features)
        seen += images.shape[0]
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    encoder.train(was_training)
    return seen


WEIGHT_SCALES = ("loaded", "init")


@torch.no_grad()
def rescale_convs_to_init_norm(encoder: nn.Module) -> int:
    """Rescale every conv that feeds a BatchNorm to the weight norm PyTorch's default init gives a conv
    of its shape (kaiming-uniform, a = sqrt(5): norm^2 = weights / (3 x fan-in)), and that BatchNorm's
    running statistics with it. No output changes (BatchNorm divides the scale out), but SGD's
    effective step on such a conv shrinks with the square of its weight norm, and a pretext leaves
    the deeper convs 4-7x larger than the init (docs/photos.md): rescaled, every init fine-tunes at the
    same effective rate. Returns the number of convs rescaled."""
    modules = list(encoder.modules())
    count = 0
    for conv, norm in zip(modules, modules[1:]):
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.modules.batchnorm._BatchNorm) and conv.bias is None:
            target = (conv.weight.numel() / (3 * conv.weight[0].numel())) ** 0.5
            scale = target / conv.weight.norm().clamp_min(1e-12)
            conv.weight.mul_(scale)
            if norm.running_mean is not None:
                norm.running_mean.mul_(scale)
                norm.running_var.mul_(scale**2)
            count += 1
    return count


class EncoderClassifier(nn.Module):
    def __init__(self, encoder: UNetEncoder, num_classes: int, features: str = "latent", hidden: int = 512, dropout: float = 0.5, linear: bool = False):
        super().__init__()
        if features not in FEATURES:
            raise UserError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
        self.encoder = encoder
        self.features = features
        self.feature_dim = feature_dim(encoder, features)
        if linear:
            # Linear probe as in MAE: a parameter-free BatchNorm standardises the frozen features
            # (a random encoder's features can be orders of magnitude off), then one linear layer.
            self.head: nn.Module = nn.Sequential(
                nn.BatchNorm1d(self.feature_dim, affine=False, eps=1e-6), nn.Linear(self.feature_dim, num_classes)
            )
        else:
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(self.feature_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) features of images in [-1, 1]."""
        return encoder_features(self.encoder, images, self.features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.extract(images))


def load_pretrained_encoder(model: EncoderClassifier, payload: dict[str, Any], source: str) -> None:
    """Load ``encoder.pt`` weights into ``model`` and check exactly which keys are new.

    Every encoder tensor must be loaded (same names, same shapes) and only the head may be missing;
    anything else (another architecture, image size or a foreign file) is an error naming the keys.
    """
    state = {f"encoder.{k}": v for k, v in payload["state_dict"].items()}
    expected = dict(model.state_dict())
    shape_mismatch = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if shape_mismatch:
        details = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shape_mismatch[:3])
        raise UserError(f"encoder in {source} does not fit this model ({details}); check --image-size and --features")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise UserError(
            f"encoder in {source} does not match the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    # Exactly the encoder was loaded; everything else in the model (the head) is new.
    encoder_keys = {k for k in expected if k.startswith("encoder.")}
    assert set(state) == encoder_keys, sorted(set(state) ^ encoder_keys)


# Encoders whose conv maps work at any multiple of their total stride (``conv_maps``), so that a
# classifier on pooled features may run at another size than the pretext's.
SIZE_FREE_ARCHS = ("unet",)


def check_transfer_size(arch: dict[str, Any], image_size: int, features: str) -> None:
    """Refuse, in one line, the one case where the transfer size must equal the pretraining size:
    what depends on it is the U-Net's latent, a conv whose kernel covers the whole deepest map at the
    pretraining size (and encoders other than the U-Net, built for their size)."""
    pretext_size = arch.get("image_size")
    if pretext_size == image_size:
        return
    if arch.get("arch") not in SIZE_FREE_ARCHS:
        raise UserError(
            f"the {arch.get('arch')} encoder was pretrained at {pretext_size} px and is built for that size; use --image-size {pretext_size}"
        )
    if features == "latent":
        raise UserError(
            f"--features latent needs --image-size {pretext_size}, the pretraining size (the latent conv's kernel covers the whole "
            f"deepest map at that size); at {image_size} px use --features pooled or multi"
        )
    stride = 2 ** len(arch.get("widths", ()))
    if image_size % stride or image_size < stride:
        raise UserError(f"--image-size must be a multiple of the encoder's total stride {stride}, got {image_size}")


def encoder_from_arch(arch: dict[str, Any], image_size: int, image_channels: int, features: str = "latent") -> UNetEncoder:
    """Build the encoder an ``encoder.pt`` describes (at its pretraining size, so every weight loads),
    refusing a mismatch with the data and a transfer size the features cannot use."""
    check_transfer_size(arch, image_size, features)
    if arch.get("in_channels") != image_channels + 1:
        raise UserError(
            f"the encoder expects {arch.get('in_channels', 1) - 1}-channel images but the dataset has {image_channels}"
        )
    return build_encoder(arch)
