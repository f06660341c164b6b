"""Every numeric option of every command declares the range it accepts (issue 21), and a value just
outside it ends in one ``error:`` line naming the flag, exit status 2, before any work: a new option
without a domain fails here."""

from __future__ import annotations

import dataclasses
import sys
import typing

import pytest

from ssl_inpaint.cli import main
from ssl_inpaint.config import MAX_SEED, Range
from ssl_inpaint.engine.evaluate import EvaluateConfig
from ssl_inpaint.engine.finetune import FinetuneConfig
from ssl_inpaint.engine.pack import PackConfig
from ssl_inpaint.engine.pixelcnn import PixelCNNConfig
from ssl_inpaint.engine.pretrain import PretrainConfig

COMMANDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig, "pixelcnn": PixelCNNConfig,
            "pack": PackConfig}


def numeric_options() -> list[tuple[str, dataclasses.Field, type]]:
    found = []
    for command, config in COMMANDS.items():
        hints = typing.get_type_hints(config)
        found += [(command, f, hints[f.name]) for f in dataclasses.fields(config) if hints[f.name] in (int, float)]
    return found


OPTIONS = numeric_options()


@pytest.mark.parametrize("command, field, kind", OPTIONS, ids=[f"{c}--{f.name}" for c, f, _ in OPTIONS])
def test_every_numeric_option_declares_a_range_holding_its_default(command, field, kind):
    domain = field.metadata.get("domain")
    assert isinstance(domain, Range), f"ssl {command} --{field.name}: give option(...) a Range (ssl_inpaint.config)"
    assert field.default in domain, f"ssl {command} --{field.name}: the default {field.default} lies outside {domain.describe()}"
    assert domain.outside(kind is int), f"ssl {command} --{field.name}: a range with no bound at all checks nothing"


CASES = [(c, f, v) for c, f, kind in OPTIONS for v in f.metadata["domain"].outside(kind is int)]


@pytest.mark.parametrize("command, field, value", CASES, ids=[f"{c}--{f.name}={v:g}" for c, f, v in CASES])
def test_a_value_outside_its_range_is_one_error_line(command, field, value, tmp_path, monkeypatch, capsys):
    flag = "--" + field.name.replace("_", "-")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ssl", command, flag, str(value), "--output-dir" if command != "pack" else "--output",
                                      str(tmp_path / "out")])
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
