"""``ssl inpaint``: fill the holes of a user's images, at any size, with a trained generator.

How any size and aspect is handled: the generator only ever sees square windows of its training side
S. Each connected hole gets its own window, centred on the hole and cut from the image at native
resolution, so nothing is resized when the hole is as small as the holes met in training. A larger
hole gets a proportionally larger window that is resized down to S, filled, and the fill resized back
(softer, but with the same context-to-hole ratio as in training). Windows that cross the image border
are completed by mirroring the image. The result keeps every known pixel of the input byte for byte:
only hole pixels are written, and the output is always PNG (lossless).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from ssl_inpaint.data.transforms import UNREADABLE
from ssl_inpaint.data.sources import IMAGE_EXTENSIONS, open_image
from ssl_inpaint.runtime import PRECISIONS, console
from ssl_inpaint.errors import UserError
from ssl_inpaint.completion import Inpainter, load_inpainter
from ssl_inpaint.storage import check_output_path, save_image_atomic


def open_upright(path: Path, what: str) -> Image.Image:
    """``open_image`` (upright, 8-bit, fully decoded: masks are drawn on the upright photo), with an
    unreadable file as one clear error."""
    try:
        return open_image(path)
    except UNREADABLE as exc:
        raise UserError(f"cannot read {what} {path} ({exc.__class__.__name__}: {exc})") from None


@dataclass
class PixelImage:
    """An 8-bit image as arrays: ``pixels`` (H, W, 1 or 3) and the untouched ``alpha`` (H, W) if any."""

    pixels: np.ndarray
    alpha: Optional[np.ndarray]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return self.pixels.shape[1], self.pixels.shape[0]

    def to_pil(self) -> Image.Image:
        colour = self.pixels[..., 0] if self.pixels.shape[-1] == 1 else self.pixels
        if self.alpha is None:
            return Image.fromarray(colour)
        return Image.fromarray(np.dstack([colour, self.alpha]))  # (H, W, 2) is LA, (H, W, 4) RGBA


def read_pixel_image(path: Path) -> PixelImage:
    """Decode to 8-bit grey or RGB (plus alpha), upright."""
    image = open_upright(path, "image")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if image.mode in ("LA", "RGBA"):
        return PixelImage(np.ascontiguousarray(array[..., :-1]).reshape(*array.shape[:2], -1), array[..., -1].copy())
    return PixelImage(array.reshape(*array.shape[:2], -1).copy(), None)


def read_mask(path: Path, size: tuple[int, int], image_path: Path) -> np.ndarray:
    """A hole mask from a PNG: white (>= 128) is the hole; a mask with transparency marks the hole by
    its transparent (alpha < 128) pixels instead. Its size must be the image's."""
    mask = open_upright(path, "mask")
    if mask.size != size:
        raise UserError(
            f"mask {path} is {mask.size[0]}x{mask.size[1]} but image {image_path} is {size[0]}x{size[1]}; "
            f"give a mask of the image's size (white = hole)"
        )
    if mask.mode == "P" and "transparency" in mask.info:
        mask = mask.convert("RGBA")
    if mask.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(mask.getchannel("A"))
        if (alpha < 255).any():
            return alpha < 128
    return np.asarray(mask.convert("L")) >= 128


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--box must be x,y,w,h in pixels (e.g. 40,30,64,64), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise UserError(f"--box {text}: width and height must be positive")
    return x, y, w, h


def box_mask(boxes: Sequence[tuple[int, int, int, int]], size: tuple[int, int], image_path: Path) -> np.ndarray:
    width, height = size
    hole = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise UserError(f"--box {x},{y},{w},{h} lies outside image {image_path} ({width}x{height})")
        hole[max(0, y) : y + h, max(0, x) : x + w] = True
    return hole


@dataclass
class Window:
    """One hole's square window, in image coordinates (it may reach past the border), and the pixels
    of that hole (``component``: a boolean array over the window) to paste back."""

    image: int
    top: int
    left: int
    side: int
    component: np.ndarray


def _place(start: int, end: int, side: int, length: int, shift_inside: bool) -> int:
    """First coordinate of a window of ``side`` centred on [start, end), moved inside [0, length) when
    it fits and moving it is allowed."""
    first = (start + end) // 2 - side // 2
    if shift_inside and side <= length:
        first = min(max(first, 0), length - side)
    return first


def plan_windows(hole: np.ndarray, image_index: int, inpainter: Inpainter) -> list[Window]:
    """One window per connected hole (8-connectivity)."""
    labels, count = ndimage.label(hole, structure=np.ones((3, 3), dtype=int))
    height, width = hole.shape
    # A centre-only generator (seed 003 M3) fills just the central half: keep a margin inside it.
    max_hole = inpainter.max_hole * (0.9 if inpainter.centre_only else 1.0)
    windows = []
    for label, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        extent = max(rows.stop - rows.start, cols.stop - cols.start)
        side = max(inpainter.image_size, math.ceil(extent / max_hole))
        top = _place(rows.start, rows.stop, side, height, not inpainter.centre_only)
        left = _place(cols.start, cols.stop, side, width, not inpainter.centre_only)
        component = _crop(labels == label, top, left, side)
        windows.append(Window(image_index, top, left, side, component))
    return windows


def _crop(array: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """``array[top:top+side, left:left+side]``, mirrored where the window crosses the border (the
    hole mask is mirrored the same way, so mirrored hole pixels stay unknown)."""
    height, width = array.shape[:2]
    pad = [(max(0, -top), max(0, top + side - height)), (max(0, -left), max(0, left + side - width))]
    pad += [(0, 0)] * (array.ndim - 2)
    if any(before or after for before, after in pad):
        array = np.pad(array, pad, mode="symmetric")
        top, left = top + pad[0][0], left + pad[1][0]
    return array[top : top + side, left : left + side]


def to_network(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Grey images are repeated to RGB for an RGB generator; RGB images are turned to luma for a grey one."""
    if pixels.shape[-1] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    return np.asarray(Image.fromarray(pixels).convert("L"))[..., None]


def from_network(values: np.ndarray, channels: int) -> np.ndarray:
    """8-bit values (N, C_net) of filled pixels in the image's own channel count."""
    if values.shape[-1] == channels:
        return values
    if channels == 3:
        return np.repeat(values, 3, axis=-1)
    luma = Image.fromarray(values[None]).convert("L")  # ITU-R 601, as PIL converts whole images
    return np.asarray(luma)[0][..., None]


def window_tensors(image: PixelImage, hole: np.ndarray, window: Window, inpainter: Inpainter) -> tuple[torch.Tensor, torch.Tensor]:
    """The window as the generator's (C, S, S) image in [0, 1] and (1, S, S) hole."""
    pixels = _crop(to_network(image.pixels, inpainter.channels), window.top, window.left, window.side)
    unknown = _crop(hole, window.top, window.left, window.side)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div(255)
    m = torch.from_numpy(np.ascontiguousarray(unknown)).float()[None]
    size = inpainter.image_size
    if window.side != size:
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        # A pixel partly covered by the hole is treated as unknown.
        m = (F.interpolate(m[None], size=(size, size), mode="area")[0] > 0).float()
    return x, m


def paste(image: PixelImage, prediction: torch.Tensor, window: Window) -> None:
    """Write the filled hole pixels of one window into ``image`` (nothing else changes)."""
    if window.side != prediction.shape[-1]:
        prediction = F.interpolate(prediction[None], size=(window.side, window.side), mode="bicubic", align_corners=False)[0]
    values = prediction.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    height, width = image.pixels.shape[:2]
    rows = np.arange(window.top, window.top + window.side)
    cols = np.arange(window.left, window.left + window.side)
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    take = window.component & inside  # mirrored copies of the hole are not written back
    r, c = np.nonzero(take)
    if r.size:
        image.pixels[rows[r], cols[c]] = from_network(values[r, c], image.pixels.shape[-1])


def fill_holes(images: list[PixelImage], holes: list[np.ndarray], inpainter: Inpainter, batch_size: int) -> int:
    """Fill every hole of every image in place, windows batched across images; returns the hole count."""
    windows = [w for i, hole in enumerate(holes) for w in plan_windows(hole, i, inpainter)]
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        pairs = [window_tensors(images[w.image], holes[w.image], w, inpainter) for w in chunk]
        predictions = inpainter.predict(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))
        for window, prediction in zip(chunk, predictions):
            paste(images[window.image], prediction, window)
    return len(windows)


@dataclass
class Job:
    image: Path
    output: Path
    mask: Optional[Path]


def _find_mask(mask_dir: Path, image: Path, relative: Path) -> Path:
    """The mask of ``image`` in a mask folder: same relative path and stem (any image extension),
    or the stem followed by ``_mask``."""
    for stem in (relative.stem, f"{relative.stem}_mask"):
        for ext in IMAGE_EXTENSIONS:
            candidate = mask_dir / relative.parent / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    raise UserError(f"no mask for {image} in {mask_dir}: expected {mask_dir / relative.parent / relative.stem}.png")


def plan_jobs(source: Path, mask: Optional[Path], output: Path) -> list[Job]:
    if not source.exists():
        raise UserError(f"input not found: {source} (pass an image file or a folder of images)")
    if mask is not None and not mask.exists():
        raise UserError(f"mask not found: {mask} (pass a PNG mask, white = hole, or a folder of them)")
    if source.is_file():
        if output.suffix and output.suffix.lower() != ".png":
            raise UserError(f"-o {output}: results are written as PNG so that known pixels stay exact; use a .png name or a folder")
        target = output if output.suffix else output / f"{source.stem}.png"
        if mask is not None and mask.is_dir():
            mask = _find_mask(mask, source, Path(source.name))
        jobs = [Job(source, target, mask)]
    else:
        if output.suffix:
            raise UserError(f"-o {output}: with a folder of images, -o must be a folder")
        images = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if mask is not None and mask.is_dir() and mask.resolve() != source.resolve():
            images = [p for p in images if mask.resolve() not in p.resolve().parents]
        if not images:
            raise UserError(f"no images in {source} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        jobs = []
        for image in images:
            relative = image.relative_to(source)
            image_mask = _find_mask(mask, image, relative) if mask is not None and mask.is_dir() else mask
            jobs.append(Job(image, output / relative.with_suffix(".png"), image_mask))
    jobs = _distinct_outputs(jobs)
    inputs = {Path(os.path.realpath(p)): p for job in jobs for p in (job.image, job.mask) if p is not None}
    for job in jobs:
        given = inputs.get(Path(os.path.realpath(job.output)))
        if given is not None:
            raise UserError(f"-o would overwrite the input {given}; choose another output")
    return jobs


def _distinct_outputs(jobs: list[Job]) -> list[Job]:
    """Give inputs that would share an output name (photo.jpg and photo.png -> photo.png) names that
    keep their extension (photo_jpg.png, photo_png.png), so no result overwrites another."""
    by_output: dict[Path, list[Job]] = {}
    for job in jobs:
        by_output.setdefault(job.output, []).append(job)
    renamed = []
    for job in jobs:
        if len(by_output[job.output]) > 1:
            job = Job(job.image, job.output.with_name(f"{job.output.stem}_{job.image.suffix.lstrip('.').lower()}.png"), job.mask)
        renamed.append(job)
    outputs = [job.output for job in renamed]
    if len(set(outputs)) != len(outputs):
        clash = next(o for o in outputs if outputs.count(o) > 1)
        raise UserError(f"two inputs would both be written to {clash}; rename one of them")
    return renamed


def _chunks(items: Sequence[Job], size: int) -> Iterator[Sequence[Job]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_inpaint(
    source: Path,
    checkpoint: str,
    output: Path,
    mask: Optional[Path] = None,
    boxes: Sequence[str] = (),
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "fp32",
    overwrite: bool = False,
) -> list[Path]:
    """Inpaint one image or a folder; returns the written files."""
    if mask is None and not boxes:
        raise UserError("no hole given: pass --mask MASK.png (white = hole) or one or more --box x,y,w,h")
    if mask is not None and boxes:
        raise UserError("give the hole as --mask or as --box, not both")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    parsed_boxes = [parse_box(b) for b in boxes]
    jobs = plan_jobs(source, mask, output)
    existing = [job.output for job in jobs if job.output.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]}{more} already exist(s); pass --overwrite to replace them or choose another -o")
    inpainter = load_inpainter(checkpoint, device, precision)  # first: a wrong --checkpoint is named as such
    for job in jobs:  # never into the generator's run folder, nor into any other command's
        check_output_path(job.output, [checkpoint], "inpaint")
    written: list[Path] = []
    holes_filled = 0
    for chunk in _chunks(jobs, batch_size):
        images = [read_pixel_image(job.image) for job in chunk]
        holes = [
            read_mask(job.mask, image.size, job.image) if job.mask is not None else box_mask(parsed_boxes, image.size, job.image)
            for job, image in zip(chunk, images)
        ]
        for job, hole in zip(chunk, holes):
            if hole.all():
                raise UserError(
                    f"the hole of {job.image} covers the whole image, so there is no context to complete it from; "
                    f"check the mask (white = hole) or the --box"
                )
        holes_filled += fill_holes(images, holes, inpainter, batch_size)
        for job, image, hole in zip(chunk, images, holes):
            if not hole.any():
                console.print(f"note: the mask of {job.image} has no hole pixels; written unchanged", style="yellow")
            save_image_atomic(image.to_pil(), job.output)
            written.append(job.output)
    where = written[0] if len(written) == 1 else output
    console.print(f"inpainted {len(written)} image(s), {holes_filled} hole(s), on {inpainter.device.type}: {where}")
    return written
