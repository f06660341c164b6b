"""Classical inpainting, the methods a user would reach for instead of a trained generator.

Every method takes an 8-bit image (H, W, C) and a boolean hole mask (H, W) and returns an 8-bit image
whose known pixels are the input's. OpenCV (Telea, Navier-Stokes) and scikit-image (biharmonic) are
an optional dependency group: ``pip install 'ssl_inpaint[baselines]'``.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from ssl_inpaint.errors import UserError
from ssl_inpaint.registry import Registry

Baseline = Callable[[np.ndarray, np.ndarray], np.ndarray]

# OpenCV's neighbourhood radius in pixels (its documentation's example uses 3; larger holes want more).
DEFAULT_RADIUS = 5


def _require(module: str, package: str, method: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"baseline {method!r} needs {package}: pip install 'ssl_inpaint[baselines]' (or drop it from --baselines)"
        ) from None


def _opencv(flag_name: str, method: str, radius: int) -> Baseline:
    cv2 = _require("cv2", "opencv-python-headless", method)
    flag = getattr(cv2, flag_name)

    def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        out = cv2.inpaint(np.ascontiguousarray(image), hole.astype(np.uint8), radius, flag)
        return out.reshape(image.shape)  # OpenCV drops the channel axis of one-channel images

    return inpaint


def _biharmonic() -> Baseline:
    restoration = _require("skimage.restoration", "scikit-image", "biharmonic")

    def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        filled = restoration.inpaint_biharmonic(image.astype(np.float64) / 255.0, hole, channel_axis=-1)
        return np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)

    return inpaint


def mean_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The hole painted with the mean colour of the image's known pixels."""
    out = image.copy()
    known = ~hole
    colour = image[known].mean(axis=0) if known.any() else np.full(image.shape[-1], 127.5)
    out[hole] = np.rint(colour).astype(np.uint8)
    return out


BASELINES: Registry[Callable[[int], Baseline]] = Registry("baseline", "--baselines")
BASELINES.add("telea", lambda radius: _opencv("INPAINT_TELEA", "telea", radius))
BASELINES.add("ns", lambda radius: _opencv("INPAINT_NS", "ns", radius))
BASELINES.add("biharmonic", lambda radius: _biharmonic())
BASELINES.add("mean", lambda radius: mean_fill)


def create_baseline(name: str, radius: int = DEFAULT_RADIUS) -> Baseline:
    """The baseline behind a ``--baselines`` name; missing optional packages are a clear error."""
    return BASELINES.get(name)(radius)


def keep_known(image: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Known pixels exactly as in ``image`` whatever the method did to them."""
    return np.where(hole[..., None], filled, image)
