"""Your own mask families, encoders, datasets and discriminators, without forking: the ``ssl`` command
imports every Python file or module named in ``SSL_INPAINT_PLUGINS`` (separated like PATH) before it
reads its options, so whatever they register (``@MASKS.register``, ``GENERATORS``, ``ENCODERS``,
``DISCRIMINATORS``, ``DATASETS``) can be chosen by its flag. Under torchrun every process imports them
too (the variable is inherited). docs/extending.md and templates/ show one of each kind."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from ssl_inpaint.errors import UserError

PLUGINS_VARIABLE = "SSL_INPAINT_PLUGINS"


def load_plugins(spec: str | None = None) -> list[ModuleType]:
    """Import each entry of ``spec`` (default: the ``SSL_INPAINT_PLUGINS`` variable): a ``.py`` file or
    an importable module name. A missing file or a plugin that fails to import is one error line."""
    spec = os.environ.get(PLUGINS_VARIABLE, "") if spec is None else spec
    return [load_plugin(entry.strip()) for entry in spec.split(os.pathsep) if entry.strip()]


def load_plugin(entry: str) -> ModuleType:
    try:
        if not entry.endswith(".py"):
            return importlib.import_module(entry)
        return _load_file(Path(entry).expanduser())
    except UserError:
        raise
    except Exception as exc:  # the plugin's own code failed: name it, in one line
        raise UserError(f"cannot load plugin {entry} from {PLUGINS_VARIABLE}: {type(exc).__name__}: {exc}") from None


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserError(f"{PLUGINS_VARIABLE} names {path}, which is not a file (give a .py file or a module name)")
    name = f"ssl_inpaint_plugin_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
        return sys.modules[name]  # imported already (a second call in the same process)
    module_spec = importlib.util.spec_from_file_location(name, path.resolve())
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
