"""Packed images: a dataset decoded and resized once, read back as an in-memory array.

Decoding a JPEG is most of the loader's time at small sizes (about 1 ms a 640x480 photo even at 1/8
size), which on a few cores is slower than a small network's step. ``ssl pack`` decodes every image
once and stores it resized to the training side (shorter side = ``image_size``, the deterministic
half of the pretext transform, so training on the pack gives the same samples as on the files), and
``--dataset packed`` reads it through a memory map: a training epoch then costs what Fashion-MNIST's
does. The same idea as FFCV's files or the downsampled ImageNet variants, kept to plain NumPy files:

  DIR/pack.json    format, image side, colour mode, count, the source it came from
  DIR/pixels.u8    every image's uint8 (C, H, W) pixels, one after the other
  DIR/shapes.npy   (N, 3) int32: C, H, W of each image
  DIR/names.txt    where each image came from (for messages), one per line
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ssl_inpaint.data.sources import ImageSource
from ssl_inpaint.data.transforms import UNREADABLE, resized
from ssl_inpaint.errors import UserError
from ssl_inpaint.storage import cannot_use, replace_atomically, write_json_atomic, write_text_atomic

try:
    import fcntl
except ImportError:  # Windows: no lock, the marker alone
    fcntl = None  # type: ignore[assignment]

PACK_FORMAT = "ssl_inpaint.pack/1"


def _pack_layout(root: Path) -> dict[str, Path]:
    return {name: root / name for name in ("pack.json", "pixels.u8", "shapes.npy", "names.txt")}


def _write_pixels(
    source: ImageSource, image_size: int, path: Path, reduced_decode: bool, strict: bool,
    progress: Optional[Callable[[int, int], None]],
) -> tuple[list[tuple[int, ...]], list[str], list[str]]:
    """Append every readable image's resized pixels to ``path``; (shapes, names, unreadable ones)."""
    shapes, names, skipped = [], [], []
    with path.open("wb") as pixels:
        for index in range(len(source)):
            try:
                image = resized(source.load(index, image_size if reduced_decode else 0), image_size)
            except UNREADABLE as exc:  # reading only: a failed write (a full disk) is not a bad image
                if strict:
                    raise UserError(f"unreadable image {source.describe(index)} ({exc}); fix it or drop --strict") from None
                skipped.append(source.describe(index))
            else:
                pixels.write(image.contiguous().numpy().tobytes())
                shapes.append(tuple(image.shape))
                names.append(source.describe(index).replace("\n", " "))
            if progress is not None:
                progress(index + 1, len(source))
    if not shapes:
        raise UserError(f"none of the {len(source)} images of {source.name} could be read; check the dataset")
    return shapes, names, skipped


PARTIAL_MARKER = ".ssl_pack_partial"  # in OUTPUT.partial while ssl pack writes it: a folder ssl pack made


def pack_images(
    source: ImageSource,
    image_size: int,
    output: Path,
    reduced_decode: bool = True,
    strict: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[int, list[str]]:
    """Decode every image of ``source`` once, resize its shorter side to ``image_size`` and write the
    pack to ``output`` (a new folder; written beside it as OUTPUT.partial, then renamed, so a stopped
    run leaves no half pack). Returns (images packed, the unreadable ones skipped)."""
    if output.exists():
        raise UserError(f"{output} exists already; choose another --output or remove it")
    partial = output.with_name(output.name + ".partial")
    with _own_partial_folder(partial, output):
        try:
            shapes, names, skipped = _write_pixels(source, image_size, partial / "pixels.u8", reduced_decode, strict, progress)
            paths = _pack_layout(partial)
            replace_atomically(paths["shapes.npy"], lambda tmp: _save_npy(tmp, np.asarray(shapes, dtype=np.int32)))
            write_text_atomic("\n".join(names) + "\n", paths["names.txt"])
            meta = {"format": PACK_FORMAT, "image_size": image_size, "mode": source.mode, "count": len(shapes),
                    "source": source.name, "reduced_decode": reduced_decode, "skipped": len(skipped)}
            write_json_atomic(meta, paths["pack.json"])  # last: its presence marks a whole pack
            (partial / PARTIAL_MARKER).unlink()
            (partial / ".lock").unlink()  # still held through its open handle until the rename is done
            if output.exists():
                raise UserError(f"{output} appeared while packing; choose another --output or remove it")
            os.rename(partial, output)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # ours: made under our lock
            raise
    return len(shapes), skipped


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:  # a file object: np.save would append .npy to a temporary name
        np.save(handle, array, allow_pickle=False)


@contextlib.contextmanager
def _own_partial_folder(partial: Path, output: Path) -> Iterator[None]:
    """Create ``partial`` and hold a lock on it while packing. A ``partial`` left by a killed ssl pack
    (its marker, nobody holding its lock) is removed first; one that another ssl pack is writing, or
    that ssl pack did not make, is refused and left alone."""
    if partial.exists():
        if not (partial / PARTIAL_MARKER).is_file():
            raise UserError(f"{partial} exists and was not made by ssl pack; move it away or choose another --output")
        with _partial_lock(partial, output):
            shutil.rmtree(partial)  # a killed pack's leftover: nobody holds its lock
    try:
        partial.mkdir(parents=True)
    except FileExistsError:
        raise UserError(f"another ssl pack is writing {output}; wait for it to finish or choose another --output") from None
    except OSError as exc:
        raise UserError(cannot_use(partial, exc)) from None
    with _partial_lock(partial, output):
        write_text_atomic(f"{os.getpid()}\n", partial / PARTIAL_MARKER)
        yield


@contextlib.contextmanager
def _partial_lock(partial: Path, output: Path) -> Iterator[None]:
    try:
        handle = open(partial / ".lock", "a+")
    except OSError as exc:
        raise UserError(cannot_use(partial / ".lock", exc)) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another ssl pack is writing {output}; wait for it to finish or choose another --output") from None
        yield
    finally:
        handle.close()


PACK_META = {"format": str, "image_size": int, "mode": str, "count": int, "source": str}


def _check_pack_meta(meta: object, root: Path) -> None:
    """pack.json holds the fields a pack is read with, with their types: an edited or foreign file is
    one line, not a KeyError."""
    if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{root} is a pack of format {found!r}, not {PACK_FORMAT}; write it again with ssl pack")
    for key, kind in PACK_META.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            raise UserError(f"{root / 'pack.json'} has no valid {key!r} ({value!r}); write the pack again with ssl pack")
    if meta["mode"] not in ("RGB", "L"):
        raise UserError(f"{root / 'pack.json'} has colour mode {meta['mode']!r}, not RGB or L; write the pack again with ssl pack")


class PackedSource(ImageSource):
    """A pack written by ``ssl pack``: images already resized to ``stored_size``, read from a memory
    map. ``load`` gives the stored uint8 (C, H, W) tensor."""

    in_memory = True

    def __init__(self, root: str | Path):
        self.root = Path(root)
        paths = _pack_layout(self.root)
        if not paths["pack.json"].is_file():
            raise UserError(f"{self.root} is not a pack (no pack.json); write one with ssl pack")
        try:
            meta = json.loads(paths["pack.json"].read_text())
            self.shapes = np.load(paths["shapes.npy"], allow_pickle=False)
            self.pixels_map = np.memmap(paths["pixels.u8"], dtype=np.uint8, mode="r")
            self.names = paths["names.txt"].read_text().splitlines()
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the pack {self.root} ({exc}); write it again with ssl pack") from None
        _check_pack_meta(meta, self.root)
        if self.shapes.ndim != 2 or self.shapes.shape[1] != 3 or self.shapes.dtype.kind not in "iu" or (self.shapes < 1).any():
            raise UserError(f"the pack {self.root} has a damaged shapes.npy (not one positive C, H, W row an image); write it again with ssl pack")
        self.offsets = np.concatenate([[0], np.cumsum(np.prod(self.shapes.astype(np.int64), axis=1))])
        if len(self.shapes) != meta["count"] or len(self.names) != meta["count"] or self.offsets[-1] != self.pixels_map.size:
            raise UserError(f"the pack {self.root} is incomplete (its files disagree on the image count or size); write it again with ssl pack")
        self.mode, self.stored_size = meta["mode"], int(meta["image_size"])
        self.name = f"pack {self.root.name} of {meta['source']}"

    def __len__(self) -> int:
        return len(self.shapes)

    def load(self, index: int, min_side: int = 0) -> torch.Tensor:
        channels, height, width = (int(v) for v in self.shapes[index])
        flat = self.pixels_map[self.offsets[index] : self.offsets[index + 1]]
        return torch.from_numpy(np.array(flat).reshape(channels, height, width))

    def pixels(self, indices: Sequence[int]) -> Optional[torch.Tensor]:
        chosen = self.shapes[list(indices)]
        if len(chosen) == 0 or (chosen != chosen[0]).any():
            return None  # images of different shapes load one by one
        return torch.stack([self.load(i) for i in indices])

    def describe(self, index: int) -> str:
        return f"{self.root}[{index}] ({self.names[index]})"
