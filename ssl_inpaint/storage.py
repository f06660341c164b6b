"""Everything the toolkit writes goes through here: one atomic writer, one error line for storage
failures, and the marker that tells which command made a run folder.

- ``replace_atomically``: a temporary file in the target's folder, flushed to disk (fsync), then
  renamed over the target. A crash, a full disk or a kill -9 leaves either the old file or the new
  one, never a truncated one; the temporary file is removed on failure.
- Every storage failure (``OSError``, and the ``RuntimeError`` PyTorch's zip writer raises for a full
  or read-only disk) becomes one ``UserError``: ``cannot use PATH: reason; fix``.
- ``claim_run_folder``: a run folder is made by one command. Its marker (``RUN/.ssl_run``: the
  command and the marker's format) is the first file written; every command refuses a folder marked
  by another command, or holding files nothing marked, before it writes anything.
- ``check_output_path``: an output file (``ssl export -o``, ``ssl inpaint -o``, ``ssl compare
  --output``) never replaces one of the command's inputs, nor lands inside another command's run
  folder.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import yaml

from ssl_inpaint.errors import UserError

RUN_MARKER = ".ssl_run"
RUN_MARKER_FORMAT = 1
LOCK_FILE = ".lock"  # runs.run_folder_lock's flock file: not a file of the run's own

STORAGE_FIXES = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space or write to another disk",
    errno.EFBIG: "the file is too large for this filesystem; write to another disk",
    errno.EACCES: "make it writable or write somewhere else",
    errno.EPERM: "make it writable or write somewhere else",
    errno.EROFS: "the filesystem is read-only; write somewhere else",
    errno.ENOTDIR: "a file stands where a folder must be; move it or choose another path",
    errno.EEXIST: "a file stands where a folder must be; move it or choose another path",
    errno.EISDIR: "a folder stands where a file must be; choose another path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def cannot_use(path: Path | str | None, exc: BaseException) -> str:
    """One line naming the file, what the system said and what to do."""
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else path
        reason = exc.strerror or str(exc) or exc.__class__.__name__
        fix = STORAGE_FIXES.get(exc.errno or -1, "check the path, its permissions and the free space")
    else:  # PyTorch's writer: "PytorchStreamWriter failed writing file data/0: file write failed"
        where, reason = path, (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        fix = "check the free space and that the folder is writable"
    return f"cannot use {where if where is not None else 'a file'}: {reason}; {fix}"


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; not every platform can open a folder, which only loses durability."""
    try:
        _fsync(folder)
    except OSError:
        pass


def make_folder(folder: Path) -> None:
    """``mkdir -p`` whose failure (a file in the way, no permission, a read-only disk) is one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(cannot_use(folder, exc)) from None


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, flush it to disk, rename it to ``path``."""
    path = Path(path)
    make_folder(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            write(tmp)
        except RuntimeError as exc:  # torch.save's zip writer reports a full or read-only disk this way
            raise UserError(cannot_use(path, exc)) from None
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(cannot_use(path, exc)) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    _fsync_folder(path.parent)


def write_text_atomic(text: str, path: Path) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def append_yaml_atomic(entries: list[Any], path: Path) -> None:
    """Append ``entries`` to the YAML list in ``path`` (a record kept across a run's starts), atomically.
    A file that is not such a list (edited by hand) is kept beside as ``<name>.unreadable``, never lost."""
    try:
        history = yaml.safe_load(path.read_text()) if path.exists() else []
    except yaml.YAMLError:
        history = None
    if not isinstance(history, list):
        path.replace(path.with_suffix(path.suffix + ".unreadable"))
        history = []
    write_text_atomic(yaml.safe_dump(history + entries, sort_keys=False), path)


def write_json_atomic(obj: Any, path: Path) -> None:
    write_text_atomic(json.dumps(obj, indent=2) + "\n", path)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through the atomic writer."""
    import torch

    replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def save_figure_atomic(figure: Any, path: Path, **kwargs: Any) -> None:
    """A matplotlib figure as PNG through the atomic writer (the format from the name, not the temp file's)."""
    replace_atomically(path, lambda tmp: figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs))


def save_image_atomic(image: Any, path: Path, format: str = "PNG") -> None:
    """A PIL image through the atomic writer."""
    replace_atomically(path, lambda tmp: image.save(tmp, format=format))


def save_png_atomic(grid: Any, path: Path) -> None:
    """An image tensor in [0, 1] (torchvision's ``save_image``: samples, best and worst cases) as PNG."""
    from torchvision.utils import save_image

    replace_atomically(path, lambda tmp: save_image(grid, tmp, format="png"))


# -- run folders ------------------------------------------------------------------------------------


def run_folder_owner(run_dir: Path) -> Optional[str]:
    """The command that made ``run_dir`` (its marker), None for a folder without a marker."""
    marker = run_dir / RUN_MARKER
    if not marker.exists():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str) or data.get("format") != RUN_MARKER_FORMAT:
        raise UserError(f"{marker} is damaged (not an ssl run marker); choose another --name or --output-dir")
    return data["command"]


def _foreign_files(run_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    except NotADirectoryError:
        raise UserError(f"{run_dir} is a file, not a run folder; choose another --name or --output-dir") from None
    except OSError as exc:
        raise UserError(cannot_use(run_dir, exc)) from None


def check_run_folder(run_dir: Path, command: str) -> None:
    """Refuse, writing nothing, a folder another command made or one holding files no command marked."""
    if not run_dir.exists():
        return
    owner = run_folder_owner(run_dir)
    if owner is None:
        found = _foreign_files(run_dir)
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise UserError(
                f"{run_dir} already holds files that ssl {command} did not write ({shown}) and no run marker; "
                f"choose another --name or --output-dir (a run folder is written by one command only)"
            )
    elif owner != command:
        raise UserError(
            f"{run_dir} holds a run of ssl {owner}; ssl {command} never writes into another command's folder: "
            f"choose another --name or --output-dir"
        )


def claim_run_folder(run_dir: Path, command: str) -> None:
    """``check_run_folder``, then create the folder and write its marker first (kept when it exists)."""
    check_run_folder(run_dir, command)
    make_folder(run_dir)
    if run_folder_owner(run_dir) is None:
        write_json_atomic({"command": command, "format": RUN_MARKER_FORMAT}, run_dir / RUN_MARKER)


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its marker and lock (a run refused before it wrote)."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {RUN_MARKER, LOCK_FILE}:
            for name in (RUN_MARKER, LOCK_FILE):
                (run_dir / name).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass  # another process got in, or the disk refused: leaving an empty run folder is harmless


def _looks_like_unmarked_run(folder: Path) -> bool:
    """A run folder written before run markers existed: its config beside a checkpoint or result."""
    return (folder / "config.yaml").is_file() and any(
        (folder / name).exists() for name in ("checkpoints", "encoder.pt", "metrics.json", "results.json")
    )


def enclosing_run_folder(path: Path) -> Optional[tuple[Path, str]]:
    """The nearest folder above ``path`` that is a run folder, with what wrote it ("ssl pretrain"; "an
    older ssl_inpaint" for one without a marker); None outside run folders."""
    for folder in Path(os.path.abspath(path)).parents:
        if (folder / RUN_MARKER).is_file():
            return folder, f"ssl {run_folder_owner(folder)}"
        if _looks_like_unmarked_run(folder):
            return folder, "an older ssl_inpaint (no run marker)"
    return None


def check_output_path(output: Path, inputs: Iterable[Path | str], command: str, flag: str = "-o") -> None:
    """An output file never equals an input, never lies inside an input folder, and never lands in a
    folder made by another command (a run's checkpoint, config or encoder)."""
    target = Path(os.path.realpath(output))
    for given in inputs:
        source = Path(os.path.realpath(given))
        if target == source or source in target.parents:
            raise UserError(f"{flag} {output} would overwrite the input {given}; write the output elsewhere")
    found = enclosing_run_folder(target)
    if found is not None and found[1] != f"ssl {command}":
        raise UserError(f"{flag} {output} lies inside {found[0]}, a run folder written by {found[1]}; write the output elsewhere")
