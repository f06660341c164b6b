"""A template for your own discriminator: copy this file, rename, change the layers.

    SSL_INPAINT_PLUGINS=templates/custom_discriminator.py ssl pretrain --discriminator spectral --global-d --no-local-d ...

``DISCRIMINATORS`` holds builders called with the command's ``ModelOptions`` and the image channels;
each returns the pair (whole-image discriminator, local discriminator), either of them None. The
whole-image one sees completed images, (B, C, S, S) in [-1, 1], with S = ``--image-size``; the local one
sees (B, C, L, L) crops centred on the hole, L = ``options.resolved_local_size``. Each returns logits of
any shape (B, ...): the BCE averages over them, so a PatchGAN's map of logits works as well as one
logit per image. Return None for a side the options turn off (``options.global_d``, ``options.local_d``).
``@refuses(check)`` gives the builder the check of the options it cannot honour: it raises ``UserError``
(one line naming the flag) when the command's flags are validated, before any run folder is written.

The generator's step freezes the discriminators' parameters and the discriminators' step detaches the
completion, whatever the module: nothing to do here for that.

tests/test_extending.py pretrains with this discriminator through the ``ssl`` command.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import spectral_norm

from ssl_inpaint.errors import UserError
from ssl_inpaint.models import DISCRIMINATORS, ModelOptions, refuses


def spectral_discriminator(image_channels: int, base: int, side: int) -> nn.Module:
    """Stride-2 4x4 convs with spectral normalisation (SN-GAN: no BatchNorm, a bounded Lipschitz
    constant), down to 4x4 or smaller, then one logit per image."""
    layers, width, in_ch = [], base, image_channels
    while side > 4:
        layers += [spectral_norm(nn.Conv2d(in_ch, width, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        in_ch, width, side = width, min(2 * width, 8 * base), side // 2
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), spectral_norm(nn.Linear(in_ch, 1)))


def fits_spectral(options: ModelOptions) -> None:
    if options.image_size < 8:
        raise UserError("--discriminator spectral needs --image-size 8 or more")


@DISCRIMINATORS.register("spectral")
@refuses(fits_spectral)
def build_spectral(options: ModelOptions, image_channels: int) -> tuple[nn.Module | None, nn.Module | None]:
    whole = spectral_discriminator(image_channels, options.base_channels, options.image_size) if options.global_d else None
    local = spectral_discriminator(image_channels, options.base_channels, options.resolved_local_size) if options.local_d else None
    return whole, local
