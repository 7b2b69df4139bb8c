"""Bad arguments get one clear line and exit status 2, before any training starts."""

from pathlib import Path

import pytest

from ganserve.training.cli import build_parser, config_from_args, main
from ganserve.training.config import FAMILIES, FAMILY_DEFAULTS, ConfigError, TrainConfig


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_unknown_family(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["stylegan", "--out", "x"], capsys)
    assert "invalid choice: 'stylegan'" in err and "dcgan" in err


def test_image_size_not_a_power_of_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["dcgan", "--out", str(tmp_path), "--image-size", "48", "--dry-run"], capsys)
    assert "image_size: 48 is not a power of two" in err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_missing_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["cgan", "--out", str(tmp_path), "--dataset", str(tmp_path / "none")], capsys)
    assert "neither 'mnist', 'fake' nor an existing folder" in err


def test_rgb_mnist_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["dcgan", "--out", str(tmp_path), "--channels", "3", "--max-steps", "1"], capsys)
    assert "digits are grey" in err


def test_a_finished_run_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "checkpoint.pt"
    earlier.write_bytes(b"an earlier run")
    err = error_of(["dcgan", "--out", str(tmp_path), "--dry-run"], capsys)
    assert "already holds a run" in err and f"--resume {earlier}" in err
    assert earlier.read_bytes() == b"an earlier run"


def test_missing_checkpoint_to_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such checkpoint file" in error_of(["evaluate", str(tmp_path / "x.pt")], capsys)


def test_the_value_measurement_can_be_skipped() -> None:
    parser = build_parser()
    assert parser.parse_args(["evaluate", "x.pt", "--no-value"]).no_value
    assert not parser.parse_args(["evaluate", "x.pt"]).no_value
    assert parser.parse_args(["cgan", "--out", "x", "--no-value"]).no_value


def test_flags_override_family_defaults_which_override_config_defaults() -> None:
    args = build_parser().parse_args(["pix2pix", "--out", "x", "--ngf", "48"])
    config = config_from_args("pix2pix", args)
    assert config.ngf == 48  # flag
    assert config.ndf == 32  # pix2pix default
    assert config.lambda_l1 == 100.0 and config.lr == 2e-4 and config.beta1 == 0.5  # paper


def test_cgan_defaults_to_the_mixed_batch_and_the_flag_turns_it_off() -> None:
    parse = build_parser().parse_args
    assert config_from_args("cgan", parse(["cgan", "--out", "x"])).mixed_batch
    assert not config_from_args(
        "cgan", parse(["cgan", "--out", "x", "--no-mixed-batch"])
    ).mixed_batch
    dcgan = config_from_args("dcgan", parse(["dcgan", "--out", "x"]))
    assert not dcgan.mixed_batch and dcgan.d_norm == "spectral" and dcgan.lr == 4e-4
    with pytest.raises(ConfigError, match="d_norm"):
        TrainConfig(family="dcgan", d_norm="layer")


def test_decay_longer_than_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["dcgan", "--out", str(tmp_path), "--decay-fraction", "1.5"], capsys)
    assert "decay_fraction: 1.5 must be between 0 and 1" in err


def test_wgan_gp_brings_the_papers_settings_and_refuses_a_batchnorm_critic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parse = build_parser().parse_args
    config = config_from_args("dcgan", parse(["dcgan", "--out", "x", "--loss", "wgan-gp"]))
    assert (config.d_norm, config.n_critic, config.lr) == ("none", 5, 1e-4)
    assert (config.beta1, config.beta2, config.gp_weight) == (0.0, 0.9, 10.0)
    flags = ["cgan", "--out", "x", "--loss", "wgan-gp", "--n-critic", "2", "--d-norm", "spectral"]
    config = config_from_args("cgan", parse(flags))
    assert (config.n_critic, config.d_norm) == (2, "spectral")  # flags still win
    err = error_of(["dcgan", "--out", str(tmp_path), "--loss", "wgan-gp", "--d-norm", "batch"],
                   capsys)  # fmt: skip
    assert "wgan-gp's critic cannot use BatchNorm" in err
    assert "ema: the decay must be in [0, 1)" in error_of(
        ["dcgan", "--out", str(tmp_path), "--ema", "1"], capsys
    )


def test_srgan_defaults_and_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    config = config_from_args("srgan", parse(["srgan", "--out", "x"]))
    assert config.scale == 4 and config.lambda_l1 == 1.0 and config.lambda_adv == 1e-3
    assert config.lambda_feature > 0
    assert config_from_args("srgan", parse(["srgan", "--out", "x", "--scale", "2"])).scale == 2
    assert "--scale: invalid choice: 3" in error_of(["srgan", "--out", "x", "--scale", "3"], capsys)
    with pytest.raises(ConfigError, match="scale: 8"):
        TrainConfig(family="srgan", scale=8)


def as_flags(config: TrainConfig) -> list[str]:
    """Every field of `config` as the flag that sets it."""
    flags = []
    for name, value in config.to_dict().items():
        flag = "--" + name.replace("_", "-")
        if name == "family" or (name == "dry_run" and not value):
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


@pytest.mark.parametrize("family", FAMILIES)
def test_the_command_line_trains_the_recipe_that_python_builds(family: str) -> None:
    parse = build_parser().parse_args
    recipe = TrainConfig.for_family(family)
    assert config_from_args(family, parse([family, "--out", "x"])) == recipe
    assert recipe != TrainConfig(family=family)  # the recipe is not the fields' defaults
    # every field has a flag: the recipe spelt out in full builds itself
    assert config_from_args(family, parse([family, "--out", "x", *as_flags(recipe)])) == recipe
    dry = config_from_args(family, parse([family, "--out", "x", "--dry-run", "--seed", "3"]))
    assert dry == TrainConfig.for_family(family, dry_run=True, seed=3)
    assert (dry.dataset, dry.max_steps) == ("fake", 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_explicit_flag_overrides_each_family_default(family: str) -> None:
    parse = build_parser().parse_args
    fields_default = TrainConfig(family=family)
    for name, value in FAMILY_DEFAULTS[family].items():
        wanted = getattr(fields_default, name)  # differs from the family's `value`
        flag = "--" + name.replace("_", "-")
        if isinstance(wanted, bool):
            flags = [flag if wanted else "--no-" + flag[2:]]
        else:
            flags = [flag, str(wanted)]
        config = config_from_args(family, parse([family, "--out", "x", *flags]))
        assert getattr(config, name) == wanted != value
        assert config == TrainConfig.for_family(family, **{name: wanted})


def test_an_unknown_family_in_python_names_the_field() -> None:
    with pytest.raises(ConfigError, match="family: unknown 'stylegan'"):
        TrainConfig.for_family("stylegan")
