import pytest
from omegaconf import OmegaConf

from procedural_perception.core.config import ConfigError, compose, parse_value


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "trainer").mkdir()
    (tmp_path / "profile").mkdir()
    (tmp_path / "train.yaml").write_text("defaults: {data: a, trainer: default, profile: small}\nseed: 0\n")
    (tmp_path / "data" / "a.yaml").write_text("name: a\nimage_size: 224\nroot: null\n")
    (tmp_path / "data" / "b.yaml").write_text("name: b\nimage_size: 32\n")
    (tmp_path / "trainer" / "default.yaml").write_text("max_steps: 100\nlr: 0.001\nfast: false\n")
    (tmp_path / "profile" / "small.yaml").write_text("data: {image_size: 64}\nmodel: {arch: tiny}\n")
    return tmp_path


def test_groups_profile_and_overrides(config_dir):
    cfg = compose(["data=b", "trainer.max_steps=5", "trainer.lr=1e-2"], config_dir=config_dir)
    assert cfg.data.name == "b"
    assert cfg.data.image_size == 64  # from the profile
    assert cfg.trainer.max_steps == 5 and cfg.trainer.lr == pytest.approx(0.01)
    assert cfg.choices.data == "b"
    assert "model" not in cfg  # a profile only sets keys the chosen groups define


def test_unknown_key_names_valid_keys(config_dir):
    with pytest.raises(ConfigError, match="Did you mean 'max_steps'.*fast, lr, max_steps"):
        compose(["trainer.max_stepz=5"], config_dir=config_dir)


def test_unknown_group_option(config_dir):
    with pytest.raises(ConfigError, match="Unknown data 'c'.*Options: a, b"):
        compose(["data=c"], config_dir=config_dir)


def test_wrong_type(config_dir):
    with pytest.raises(ConfigError, match="trainer.max_steps expects a int"):
        compose(["trainer.max_steps=abc"], config_dir=config_dir)
    with pytest.raises(ConfigError, match="trainer.fast expects a bool"):
        compose(["trainer.fast=3"], config_dir=config_dir)


def test_plus_adds_a_key_and_none_accepts_anything(config_dir):
    cfg = compose(["+trainer.extra=3", "data.root=/x"], config_dir=config_dir)
    assert cfg.trainer.extra == 3 and cfg.data.root == "/x"
    assert OmegaConf.is_struct(cfg)


def test_parse_value():
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("kml") == "kml"


def test_overriding_a_key_that_interpolates_the_choices(config_dir):
    (config_dir / "train.yaml").write_text(
        "defaults: {data: a, trainer: default}\nseed: 0\nrun_name: ${choices.data}_s${seed}\n")
    assert compose([], config_dir=config_dir).run_name == "a_s0"
    assert compose(["run_name=mine"], config_dir=config_dir).run_name == "mine"


def test_group_includes_and_choices_of_other_groups(config_dir):
    (config_dir / "trainer" / "base.yaml").write_text("max_steps: 7\nlr: 0.5\nfast: true\n")
    (config_dir / "trainer" / "derived.yaml").write_text("defaults: [base]\nlr: 0.1\n")
    (config_dir / "data" / "c.yaml").write_text("_choices: {trainer: derived}\nname: c\nimage_size: 8\n")
    cfg = compose(["data=c"], config_dir=config_dir)
    assert (cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.fast) == (7, 0.1, True)
    assert cfg.choices.trainer == "derived" and "_choices" not in cfg.data
    # a choice typed on the command line wins over the one a group file suggests
    assert compose(["data=c", "trainer=default"], config_dir=config_dir).trainer.max_steps == 100
