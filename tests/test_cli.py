"""The ``tunebench`` command line itself: version, help pages, how --config reads, messages per model kind."""

from __future__ import annotations

import argparse
from importlib import metadata

import pytest

from tunebench import config as tb_config
from tunebench.commands import cli
from tunebench.commands._run_args import spread_config_files
from tunebench.util.errors import ConfigError


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"tunebench {metadata.version('tunebench')}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_command_is_described_and_states_its_defaults():
    parser = cli.build_parser()
    assert "``" not in parser.format_help() and "tunebench COMMAND --help" in parser.format_help()
    commands = _subparsers(parser)
    assert set(commands) == set(cli.COMMANDS)
    for name, command in commands.items():
        page = command.format_help()
        assert command.description, name
        assert "``" not in page, name
        for action in command._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help:
                assert "default" in command._get_formatter()._get_help_string(action), (name, action.dest)
    assert "(default: results/claims.csv)" in commands["tables"].format_help()


def test_config_takes_one_file_per_flag_and_leaves_positionals_alone(tmp_path):
    parser = cli.build_parser("data")
    args = parser.parse_args(spread_config_files(["data", "--config", "a.yaml", "viggo"]))
    assert args.task == "viggo" and [str(p) for p in args.config] == ["a.yaml"]
    # Files in a row after one --config (as the workflow's rules pass them) are each read.
    args = parser.parse_args(spread_config_files(["data", "viggo", "--config", "a.yaml", "b.yml", "--seed", "3"]))
    assert [str(p) for p in args.config] == ["a.yaml", "b.yml"] and args.seed == 3
    args = parser.parse_args(spread_config_files(["data", "--config", "a.yaml", "--config", "b.yaml", "sql"]))
    assert [str(p) for p in args.config] == ["a.yaml", "b.yaml"] and args.task == "sql"


def test_plan_needs_the_config_it_plans(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["plan"])
    assert done.value.code == 2 and "--config" in capsys.readouterr().err


def test_an_api_model_is_never_told_to_join_the_finetune_experiments():
    config = tb_config.validate(
        {
            "models": {"remote": {"size": "XL", "api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}},
            "experiments": {"baselines": [{"task": "gsm8k", "models": ["remote"]}]},
        }
    )
    with pytest.raises(ConfigError) as info:
        config.run("gsm8k", "remote", "lora")
    message = str(info.value)
    assert "served through an API" in message and "--run baseline" in message
    assert "add it to experiments.finetune" not in message
