"""Every committed config parses as fit.py reads it, and every rows file names configs that exist."""

import shlex
from pathlib import Path

import pytest
import yaml

from scripts.fit import parse_args

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_every_config_parses_with_fit_py_s_checks_and_its_every_key_arrives(config):
    """Each key of the file is the value fit.py runs with (a parse that ignored --config would give
    the defaults, which no config repeats in full)."""
    args = parse_args(["--config", str(config)])
    settings = yaml.safe_load(config.read_text())
    assert settings and {key: getattr(args, key) for key in settings} == settings
    assert args.devices >= 1 and args.max_epochs >= 1


def test_the_command_line_wins_over_the_config():
    config = ROOT / "configs" / "fmnist_16.yaml"
    assert parse_args(["--config", str(config), "--devices", "4"]).devices == 4
    assert parse_args(["--config", str(config)]).devices == 16


def test_every_rows_file_names_configs_that_exist():
    named = []
    for rows in (ROOT / "configs").glob("*.rows"):
        for line in rows.read_text().splitlines():
            words = shlex.split(line.split("#", 1)[0])
            named += [words[i + 1] for i, word in enumerate(words) if word == "--sparse-config"]
    assert named and all((ROOT / path).is_file() for path in named), named
