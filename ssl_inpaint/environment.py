"""The software a run's numbers came from, appended to ``RUN/environment.yaml`` each time the run starts
or resumes. Seeded results are bit-identical on one software stack, not across PyTorch or timm
releases (the last digits move), so a table is rerunnable to the digit only on the versions it records."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path
from typing import Optional

from ssl_inpaint.storage import append_yaml_atomic

PACKAGES = ("ssl_inpaint", "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "pillow", "pycocotools")
ENVIRONMENT_FILE = "environment.yaml"


def package_versions() -> dict[str, str]:
    """Python's and each installed package's version (a package that is not installed is left out)."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _git(*args: str) -> Optional[str]:
    """``git ARGS`` in the package's folder, its output; None when it fails. --no-optional-locks: a
    run never takes the index lock from a commit made beside it."""
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(here), *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_commit() -> Optional[str]:
    """The git commit of the ssl_inpaint checkout, with ``+changes`` when its tracked files have
    uncommitted changes; None when the package is not a checkout's own (an installed wheel, even one
    inside another repository) or git is absent."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != Path(__file__).resolve().parents[1]:
        return None
    commit, changes = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")
    if commit is None or changes is None:
        return None
    return commit + ("+changes" if changes else "")


def environment_entry() -> dict:
    """One start of a run: when, on which platform and GPUs, with which software."""
    import torch

    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "platform": platform.platform(), **package_versions()}
    entry["cuda_build"] = torch.version.cuda  # the GPUs visible, not necessarily the device the run chose
    entry["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    entry["commit"] = source_commit()
    return entry


def record_environment(run_dir: Path) -> None:
    """Append this start's software to ``run_dir/environment.yaml`` (earlier starts are kept, so a run
    resumed on other versions says so)."""
    append_yaml_atomic([environment_entry()], run_dir / ENVIRONMENT_FILE)
