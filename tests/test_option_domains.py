"""Every numeric option of every command of the ``ssl`` CLI declares the range it accepts (issue 21),
and a value just outside it ends in one ``error:`` line naming the flag, exit status 2, before any
work: a new option without a range fails here. The options are read from the CLI itself, so a
command without a config dataclass is walked too (its ranges: ``cli.PLAIN_RANGES``)."""

from __future__ import annotations

import dataclasses
import sys
import typing

import pytest

from ssl_inpaint.cli import PLAIN_RANGES, app, main
from ssl_inpaint.config import MAX_SEED, Range
from ssl_inpaint.options.evaluate import EvaluateConfig
from ssl_inpaint.options.finetune import FinetuneConfig
from ssl_inpaint.options.pack import PackConfig
from ssl_inpaint.options.pixelcnn import PixelCNNConfig
from ssl_inpaint.options.pretrain import PretrainConfig

COMMANDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig, "pixelcnn": PixelCNNConfig,
            "pack": PackConfig}


def numeric_options() -> list[tuple[str, str, type, object]]:
    """(command, option name, int or float, its Range or None) for every numeric option of every
    command of the ``ssl`` CLI itself: from a config field, or from ``cli.PLAIN_RANGES``."""
    import typer

    found = []
    group = typer.main.get_command(app)
    for command, cli_command in sorted(group.commands.items()):
        config = COMMANDS.get(command)
        fields = {f.name: f for f in dataclasses.fields(config)} if config else {}
        for param in cli_command.params:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            kinds = [t for t in (typing.get_args(annotation) or (annotation,)) if t in (int, float)]  # Optional[int] too
            if not kinds:
                continue
            kind = kinds[0]
            field = fields.get(param.name)
            domain = field.metadata.get("domain") if field is not None else PLAIN_RANGES.get((command, param.name))
            found.append((command, param.name, kind, domain))
    return found


OPTIONS = numeric_options()


def test_every_command_has_numeric_options_to_check():
    assert {command for command, *_ in OPTIONS} >= {*COMMANDS, "export", "inpaint"}


@pytest.mark.parametrize("command, name, kind, domain", OPTIONS, ids=[f"{c}--{n}" for c, n, _, _ in OPTIONS])
def test_every_numeric_option_declares_a_range_holding_its_default(command, name, kind, domain):
    assert isinstance(domain, Range), f"ssl {command} --{name}: give option(...) a Range (config) or add it to cli.PLAIN_RANGES"
    assert domain.outside(kind is int), f"ssl {command} --{name}: a range with no bound at all checks nothing"
    config = COMMANDS.get(command)
    if config is not None:
        default = next(f.default for f in dataclasses.fields(config) if f.name == name)
        assert default in domain, f"ssl {command} --{name}: the default {default} lies outside {domain.describe()}"


REQUIRED = {"export": ["RUN", "-o", "OUT"], "inpaint": ["IMAGE", "--checkpoint", "RUN", "-o", "OUT", "--box", "1,1,2,2"]}
CASES = [(c, n, v) for c, n, kind, d in OPTIONS if d is not None for v in d.outside(kind is int)]


@pytest.mark.parametrize("command, name, value", CASES, ids=[f"{c}--{n}={v:g}" for c, n, v in CASES])
def test_a_value_outside_its_range_is_one_error_line(command, name, value, tmp_path, monkeypatch, capsys):
    flag = "--" + name.replace("_", "-")
    monkeypatch.chdir(tmp_path)
    where = {"pack": ["--output", "out"], "export": [], "inpaint": []}.get(command, ["--output-dir", "out"])
    monkeypatch.setattr(sys, "argv", ["ssl", command, *REQUIRED.get(command, []), flag, str(value), *where])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and err.startswith(f"error: {flag} must be ") and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == [], "a refused command wrote something"


def test_the_ranges_say_what_they_hold():
    assert Range(0, 1, low_open=True).describe() == "in (0, 1]" and 0 not in Range(0, 1, low_open=True)
    assert Range(1).describe() == ">= 1" and Range(1).outside(True) == [0]
    assert Range(0, 1, high_open=True).outside(False) == [-1e-6, 1]


@pytest.mark.parametrize("seeds", ["-1", f"0,{MAX_SEED + 1}"])
def test_finetune_seed_lists_are_checked_too(seeds, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ssl", "finetune", "--init", "random", "--seeds", seeds, "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "--seeds" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("args, expected", [
    (["pretrain", "--seed", "abc"], "Invalid value for '--seed'"),
    (["pretrain", "--no-such-flag", "3"], "No such option: --no-such-flag"),
    (["export"], "Missing argument 'run'; see ssl export --help"),
    (["finetune", "--epochs", "1.5"], "Invalid value for '--epochs'"),
])
def test_usage_errors_are_one_line_too(args, expected, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ssl", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err


def test_a_bare_command_prints_its_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ssl"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0 and "Usage: ssl" in capsys.readouterr().out
