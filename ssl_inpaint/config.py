"""Run configuration: one dataclass per command, filled from defaults <- recipe YAML <- CLI flags.
A command's config is built from shared option groups (``RunOptions``, ``RuntimeOptions``,
``PrecisionOptions``, ``DistributedOptions`` here; ``SourceOptions``, ``MaskOptions``, ``ModelOptions`` beside what they choose)
plus its own fields, so a flag is declared once.

Every field of a config dataclass is both a recipe key and a CLI flag (``lr_g`` <-> ``--lr-g``), so a
recipe can never hold a key the CLI does not know, and ``--help`` documents every key. The resolved
configuration is written next to every run as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
import yaml

from ssl_inpaint.environment import record_environment
from ssl_inpaint.errors import UserError
from ssl_inpaint.runtime import NUM_WORKERS_HELP, PRECISIONS
from ssl_inpaint.storage import write_text_atomic

ConfigT = TypeVar("ConfigT")


MAX_SEED = 2**63 - 1  # seeds reach NumPy and PyTorch generators, which take 64-bit values
MAX_SIDE = 8192  # pixels: an image side beyond this would not fit a batch in memory on any machine here
MAX_WIDTH = 65536  # channels, hidden units, images per batch


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: ``low <= value <= high`` (strict where ``*_open``; a bound
    of None is no bound). Every int and float option declares one (a test enforces it), and it is
    checked when the configuration is resolved, before any work."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "a number"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def outside(self, integer: bool) -> list[float]:
        """Values just outside each bound (for tests that walk every option)."""
        step = 1 if integer else 1e-6 * max(1.0, abs(self.low or 0), abs(self.high or 0))
        values = []
        if self.low is not None:
            values.append(self.low if self.low_open else self.low - step)
        if self.high is not None:
            values.append(self.high if self.high_open else self.high + step)
        return [int(v) if integer else v for v in values if not integer or float(v).is_integer()]


def at_least(low: float, high: Optional[float] = None) -> Range:
    return Range(low, high)


def positive(high: Optional[float] = None) -> Range:
    """> 0: learning rates, scales."""
    return Range(0, high, low_open=True)


UNIT = Range(0, 1)  # probabilities, fractions, weights of a convex combination
SEEDS = Range(0, MAX_SEED)


def option(default: Any, help: str, domain: Optional[Range] = None, *, resume: Optional[bool] = None,
           protocol: Optional[bool] = None) -> Any:
    """A config field with the help text shown by ``--help``, for a number the ``Range`` it accepts, and
    two decisions that behaviour reads from the field itself, so a new field cannot be forgotten:

    ``resume``: whether a resumed ``ssl pretrain`` / ``ssl pixelcnn`` run may change it (how long the run
    goes, how it logs, saves and computes: yes; what it learns from and how: no, the checkpoint's state
    would override it or the run would change meaning half-way). Every field of a resumable config
    decides (``tests/test_option_domains.py``).

    ``protocol``: whether it is part of what a transfer run measures; ``ssl compare`` sets a pretrained
    run only against baseline runs whose protocol fields all agree (where the data lives, the seed and
    the init are not). Every field of ``FinetuneConfig`` decides."""
    metadata = {"help": help, "domain": domain, "resume": resume, "protocol": protocol}
    return dataclasses.field(default=default, metadata=metadata)


def fields_deciding(config_type: type, decision: str, value: bool = True) -> tuple[str, ...]:
    """The fields of a config dataclass whose ``option(...)`` sets ``decision`` (``"resume"`` or
    ``"protocol"``) to ``value``."""
    return tuple(f.name for f in dataclasses.fields(config_type) if f.metadata.get(decision) is value)


def undecided_fields(config_type: type, decision: str) -> tuple[str, ...]:
    """The fields of a config dataclass that do not say ``decision`` (a test keeps this empty)."""
    return tuple(f.name for f in dataclasses.fields(config_type) if f.metadata.get(decision) is None)


def check_domains(config: Any) -> None:
    """Refuse a number outside its option's ``Range``, naming the flag, the range and the value."""
    for field in dataclasses.fields(config):
        domain, value = field.metadata.get("domain"), getattr(config, field.name)
        if domain is not None and isinstance(value, (int, float)):
            check_range(field.name, value, domain)


def check_range(name: str, value: float, domain: Range) -> None:
    """One option's value against its ``Range`` (also for the options of commands without a config)."""
    if value not in domain:
        shown = f"{value:g}" if isinstance(value, float) else value
        raise UserError(f"--{name.replace('_', '-')} must be {domain.describe()}, got {shown}")


@dataclasses.dataclass
class RunOptions:
    """Where a run writes and how it is seeded: every command that writes a run folder has these."""

    name: str = option("", "Run name: outputs go to OUTPUT_DIR/NAME (default: the recipe's file name).", resume=True, protocol=False)
    output_dir: str = option("runs", "Folder holding all runs (point TensorBoard here).", resume=True, protocol=False)
    seed: int = option(0, "Seed of everything random in the run (initialisation, shuffling, crops, holes, sampling).", SEEDS, resume=False, protocol=False)


@dataclasses.dataclass
class RuntimeOptions:
    """Where the work runs and how data reaches it."""

    device: str = option("auto", "auto, cpu, cuda or cuda:N.", resume=True, protocol=False)
    num_workers: int = option(-1, NUM_WORKERS_HELP, at_least(-1, 256), resume=True, protocol=False)


@dataclasses.dataclass
class DistributedOptions:
    """Training on several processes (GPUs, nodes): torchrun's launch and BatchNorm across processes."""

    nproc: int = option(1, "Launch this many processes on this machine with torchrun (one per GPU).", at_least(1, 1024), resume=True, protocol=False)
    sync_bn: bool = option(True, "SyncBatchNorm across processes when the world size is > 1 (CUDA only).", resume=True, protocol=True)


@dataclasses.dataclass
class PrecisionOptions:
    precision: str = option("fp32", f"{', '.join(PRECISIONS)} (autocast; fp16 adds a GradScaler, CUDA only).", resume=True, protocol=True)

    def check_precision_name(self) -> None:
        check_choices(self, {"precision": tuple(PRECISIONS)})


def _field_types(config_cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML file into a flat mapping of config keys."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe file not found: {path} (see the recipes/ folder for the shipped ones)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"recipe {path} is not a text file (not UTF-8); a recipe is YAML text") from None
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _coerce(key: str, value: Any, expected: type) -> Any:
    if value is None:
        raise UserError(f"option {key!r} has no value (null) in the recipe; give it one or delete the key to use the default")
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"option {key!r} must be true or false, got {value!r}")
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise UserError(f"option {key!r} must be of type {expected.__name__}, got {value!r}")


def resolve_config(config_cls: type[ConfigT], recipe: dict[str, Any], flags: dict[str, Any]) -> ConfigT:
    """Defaults, overridden by the recipe, overridden by flags given on the command line (not None)."""
    types = _field_types(config_cls)
    unknown = sorted(set(recipe) - set(types))
    if unknown:
        raise UserError(
            f"unknown recipe key(s) {', '.join(unknown)}; valid keys are the command's --options "
            f"(run with --help)"
        )
    values: dict[str, Any] = {}
    for key, value in recipe.items():
        values[key] = _coerce(key, value, types[key])
    for key, value in flags.items():
        if value is not None:
            values[key] = _coerce(key, value, types[key])
    for key, value in values.items():  # NaN or inf is never a meaningful setting, and NaN passes every < or >
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{key.replace('_', '-')} must be a finite number, got {value}")
    config = config_cls(**values)
    check_domains(config)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def check_choices(config: Any, choices: dict[str, tuple[str, ...]]) -> None:
    """Refuse a value outside its allowed set, naming the flag and the choices."""
    for key, allowed in choices.items():
        value = getattr(config, key)
        if value not in allowed:
            raise UserError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}")


def save_config(config: Any, path: Path) -> None:
    """The resolved configuration, saved with every run (atomically: a crash never leaves half of it),
    and the software it runs on, appended to environment.yaml beside it."""
    write_text_atomic(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), path)
    record_environment(path.parent)


def check_run_name(name: str) -> None:
    """A run name is one folder inside --output-dir: no separators, no '..', nothing absolute."""
    if name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or "\0" in name:
        raise UserError(
            f"--name {name!r} must be a plain folder name (no '/', '\\' or '..', no surrounding spaces); "
            f"use --output-dir to choose where runs go"
        )


def typer_command(
    config_cls: type[ConfigT], run: Callable[[ConfigT], None], doc: str, default_name: Optional[str] = "run"
) -> Callable[..., None]:
    """Build a typer command whose options are exactly the config fields, plus ``--recipe``.

    Every option defaults to None so that only flags the user typed override the recipe. A config
    with an empty ``name`` is named after the recipe file (or ``default_name``; None leaves the
    naming to the engine, which gets the recipe's file name as a prefix through the same field).
    """

    def command(**kwargs: Any) -> None:
        recipe_path = kwargs.pop("recipe")
        recipe = load_recipe(recipe_path) if recipe_path else {}
        config = resolve_config(config_cls, recipe, kwargs)
        if getattr(config, "name", None) == "" and (recipe_path or default_name):
            config.name = Path(recipe_path).stem if recipe_path else default_name
        if getattr(config, "name", ""):
            check_run_name(config.name)
        if getattr(config, "nproc", 1) > 1:
            from ssl_inpaint.distributed import relaunch_under_torchrun

            relaunch_under_torchrun(config.nproc)
        run(config)

    params = [
        inspect.Parameter(
            "recipe",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--recipe", help="YAML recipe; flags given here override its keys."),
            annotation=Optional[str],
        )
    ]
    for f in dataclasses.fields(config_cls):
        ftype = _field_types(config_cls)[f.name]
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{f.name.replace('_', '-')}"] if ftype is bool else [flag]
        help_text = f"{f.metadata.get('help', '')} [default: {f.default!r}]"
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, *decls, help=help_text, show_default=False),
                annotation=Optional[ftype],
            )
        )
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command
