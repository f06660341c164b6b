"""The completion metrics on cases with known answers, SSIM against scikit-image, and the classical baselines."""

import math

import numpy as np
import pytest
import torch

from ssl_inpaint.models.baselines import create_baseline, keep_known, mean_fill
from ssl_inpaint.errors import UserError
from ssl_inpaint.metrics import image_quality, l1, psnr, ssim


def smooth_image(channels: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Gradients plus noise: structure for SSIM, values inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = (ramp[None, :] + ramp[:, None]) / 2
    noise = torch.rand(channels, size, size, generator=g) * 0.3
    return (0.6 * base + noise).clamp(0, 1)[None]


def test_identical_images_score_perfectly():
    x = smooth_image(3)
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 16:48, 16:48] = 1
    scores = image_quality(x, x.clone(), hole)
    assert scores["psnr_image"].item() == pytest.approx(100.0)  # the documented cap for an exact match
    assert scores["psnr_hole"].item() == pytest.approx(100.0)
    assert scores["ssim_image"].item() == pytest.approx(1.0, abs=1e-6)
    assert scores["ssim_hole"].item() == pytest.approx(1.0, abs=1e-6)
    assert scores["l1_image"].item() == 0 and scores["l1_hole"].item() == 0


def test_known_mse_gives_known_psnr_over_image_and_hole():
    target = torch.zeros(2, 3, 40, 40)
    pred = torch.full_like(target, 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(pred, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert l1(pred, target).tolist() == pytest.approx([0.1, 0.1], abs=1e-6)
    # An error only inside a hole covering a quarter of the image: 20 dB in the hole, +6.02 dB over the image.
    hole = torch.zeros(2, 1, 40, 40)
    hole[..., :20, :20] = 1
    pred = target + 0.1 * hole
    assert psnr(pred, target, hole).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert psnr(pred, target).tolist() == pytest.approx([20 + 10 * math.log10(4)] * 2, abs=1e-4)
    assert l1(pred, target, 1 - hole).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    metrics = pytest.importorskip("skimage.metrics")
    x = smooth_image(channels, seed=1)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) - 0.5
    y = (x + 0.4 * noise).clamp(0, 1)
    expected = metrics.structural_similarity(
        x[0].numpy().astype(np.float64), y[0].numpy().astype(np.float64), channel_axis=0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )
    assert 0.2 < expected < 0.95  # a case where SSIM is informative
    assert ssim(x.double(), y.double()).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_drops_with_noise():
    x = smooth_image(3)
    g = torch.Generator().manual_seed(3)
    slightly = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    very = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert ssim(x, x) > ssim(slightly, x) > ssim(very, x)


def gradient_photo() -> tuple[np.ndarray, np.ndarray]:
    ramp = np.linspace(0, 255, 48)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (48, 1)), np.full((48, 48), 90.0)], axis=-1)
    hole = np.zeros((48, 48), dtype=bool)
    hole[18:30, 20:32] = True
    return np.rint(image).astype(np.uint8), hole


@pytest.mark.parametrize("name", ["telea", "ns", "biharmonic", "mean"])
def test_baselines_keep_known_pixels_and_fill_the_hole(name):
    if name != "mean":
        pytest.importorskip("cv2" if name in ("telea", "ns") else "skimage")
    image, hole = gradient_photo()
    holed = image.copy()
    holed[hole] = 0
    filled = keep_known(holed, create_baseline(name)(holed, hole), hole)
    assert filled.shape == image.shape and filled.dtype == np.uint8
    assert np.array_equal(filled[~hole], image[~hole])
    error = np.abs(filled[hole].astype(float) - image[hole]).mean()
    # A smooth gradient is easy for diffusion methods; the mean colour is a coarse guess.
    assert error < (40 if name == "mean" else 8)


def test_mean_fill_uses_the_known_pixels_colour():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    image[..., 0] = 200
    hole = np.zeros((10, 10), dtype=bool)
    hole[2:5, 2:5] = True
    image[hole] = 7  # whatever is under the hole must not matter
    assert mean_fill(image, hole)[3, 3].tolist() == [200, 0, 0]


def test_unknown_baseline_and_missing_package_are_clear_errors(monkeypatch):
    with pytest.raises(UserError, match="unknown baseline 'lama'"):
        create_baseline("lama")
    import importlib

    real = importlib.import_module

    def no_cv2(name, *args):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_cv2)
    with pytest.raises(UserError, match=r"needs opencv-python-headless: pip install 'ssl_inpaint\[baselines\]'"):
        create_baseline("telea")
