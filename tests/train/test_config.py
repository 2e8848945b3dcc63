"""The trainer's configuration: TOML + --section.key=value overrides, --help, clear errors."""

import dataclasses

import pytest

from ember.train.config import Config, ConfigError, build_parser, parse_config

from .helpers import cli


def test_defaults_are_the_shipped_debug_config():
    assert parse_config([]).to_dict() == parse_config(["--config", "debug"]).to_dict()


def test_overrides_win_over_the_file_and_are_typed(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[training]\nsteps = 7\nbatch_size = 4\n[optimizer]\nlr = 0.5\n")
    cfg = parse_config(["--config", str(f), "--training.steps=9", "--optimizer.betas", "0.8,0.9", "--compile"])
    assert (cfg.training.steps, cfg.training.batch_size, cfg.optimizer.lr) == (9, 4, 0.5)
    assert cfg.optimizer.betas == (0.8, 0.9) and cfg.training.compile is True
    assert parse_config(["--training.compile=false"]).training.compile is False
    assert parse_config(["--checkpoint.resume"]).checkpoint.resume == "latest"


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = parse_config(["--training.steps=3", "--optimizer.betas=0.7,0.8", "--data.sources=a:2,b"])
    f = tmp_path / "saved.toml"
    f.write_text(cfg.to_toml())
    assert parse_config(["--config", str(f)]) == cfg


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[training]\nstepz = 3\n", "unknown key 'training.stepz' (did you mean 'training.steps'?)"),
        ("[trainig]\nsteps = 3\n", "unknown section 'trainig' (did you mean 'training'?)"),
        ('[training]\nsteps = "many"\n', "training.steps must be an int, got str 'many'"),
        ("[training]\ncompile = 3\n", "training.compile must be a bool"),
        ('[lr_scheduler]\ndecay = "exp"\n', "lr_scheduler.decay must be one of cosine, linear, wsd, constant"),
        ("steps = 3\n", "top-level key 'steps' must be a [section]"),
        ("[training\n", "is not valid TOML"),
    ],
)
def test_bad_config_files_are_rejected(tmp_path, toml, message):
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        parse_config(["--config", str(f)])
    assert message in str(e.value)


def test_bad_flags_are_rejected():
    with pytest.raises(ConfigError, match="optimizer.lr must be a float, got str 'fast'"):
        parse_config(["--optimizer.lr=fast"])
    with pytest.raises(ConfigError, match="no shipped config of that name"):
        parse_config(["--config", "nope"])
    with pytest.raises(SystemExit):
        parse_config(["--training.stepz=3"])


def test_help_lists_every_option():
    text = build_parser().format_help()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            assert f"--{section.name}.{f.name}" in text
    assert "--compile" in text and "(default: 300)" in text


def test_cli_unknown_option_exits_2_with_a_hint():
    r = cli("train", "--training.stepz=3")
    assert r.returncode == 2 and "unknown option --training.stepz (did you mean --training.steps?)" in r.stderr
