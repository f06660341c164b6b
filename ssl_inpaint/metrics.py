"""Image-quality metrics for completions, on images in [0, 1], optionally restricted to the hole."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map the model's [-1, 1] range to [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


def _region_mean(values: torch.Tensor, region: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-image mean of (B, C, H, W) values over ``region`` (B, 1, H, W), or over everything."""
    if region is None:
        return values.flatten(1).mean(dim=1)
    region = region.expand_as(values)
    return (values * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp_min(1)


def l1(pred: torch.Tensor, target: torch.Tensor, region: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image mean absolute error."""
    return _region_mean((pred - target).abs(), region)


def psnr(pred: torch.Tensor, target: torch.Tensor, region: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-image PSNR in dB for data range 1; an exact match is capped at 100 dB."""
    mse = _region_mean((pred - target).square(), region)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM map (Wang et al. 2004: Gaussian 11x11, sigma 1.5, K1=0.01, K2=0.03, data range 1),
    'same'-size with reflect padding so it can be averaged over a hole touching the border."""
    channels = pred.shape[1]
    kernel = _gaussian_window(window, sigma, channels, pred.device, pred.dtype)
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor, region: Optional[torch.Tensor] = None, window: int = 11) -> torch.Tensor:
    """Per-image mean SSIM over ``region`` if given; otherwise over the pixels whose whole window lies
    inside the image, as Wang et al. and ``skimage.metrics.structural_similarity`` (Gaussian weights,
    sigma 1.5, population covariance) do, so the image-level value matches scikit-image's."""
    values = ssim_map(pred, target, window)
    if region is not None:
        return _region_mean(values, region)
    pad = window // 2
    return values[..., pad:-pad, pad:-pad].flatten(1).mean(dim=1)


def image_quality(completed: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR, SSIM and L1 over the whole image and over the hole, for images in [0, 1].
    Image-level values include the known pixels, so they rise as holes shrink: compare methods on
    the same images and masks only."""
    return {
        "psnr_image": psnr(completed, target),
        "psnr_hole": psnr(completed, target, mask),
        "ssim_image": ssim(completed, target),
        "ssim_hole": ssim(completed, target, mask),
        "l1_image": l1(completed, target),
        "l1_hole": l1(completed, target, mask),
    }


# Which direction is better, for tables.
HIGHER_IS_BETTER = {"psnr_image": True, "psnr_hole": True, "ssim_image": True, "ssim_hole": True, "l1_image": False, "l1_hole": False}


def completion_metrics(completed: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`image_quality` for the model's [-1, 1] range."""
    return image_quality(to_unit(completed.float()), to_unit(target.float()), mask)


def voc_average_precision(scores, targets, ignore=None) -> float:
    """Average precision as in the VOC devkit (2010+): the area under the precision envelope
    (precision made monotone from the right) over all recall points. Entries flagged in ``ignore``
    (difficult-only) are dropped. NaN when the class has no positive."""
    import numpy as np

    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets) > 0
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        scores, targets = scores[keep], targets[keep]
    positives = int(targets.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = targets[order]
    true_pos = np.cumsum(hits)
    precision = true_pos / np.arange(1, len(hits) + 1)
    recall = true_pos / positives
    envelope = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def mean_average_precision(scores, targets, ignore=None) -> tuple[float, list[float]]:
    """(mAP over the classes that have positives, per-class AP) for (N, K) scores and 0/1 targets."""
    import numpy as np

    scores, targets = np.asarray(scores), np.asarray(targets)
    per_class = [
        voc_average_precision(scores[:, k], targets[:, k], None if ignore is None else np.asarray(ignore)[:, k])
        for k in range(scores.shape[1])
    ]
    valid = [ap for ap in per_class if not np.isnan(ap)]
    return (float(np.mean(valid)) if valid else float("nan")), per_class


def top1_accuracy(scores, targets) -> float:
    import numpy as np

    return float((np.asarray(scores).argmax(axis=1) == np.asarray(targets)).mean())
