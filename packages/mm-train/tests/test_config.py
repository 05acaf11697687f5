"""Tests for mm_train.config: generated CLI, presets, precedence, errors, config.json."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mm_train.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    load_preset,
    parse_config,
    save_config,
)


@dataclass
class OptimConfig:
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.1
    amsgrad: bool = False


@dataclass
class TrainConfig:
    out: str = field(default="runs/ghm", metadata={"help": "output directory"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device"})
    seed: int = 0
    resume: bool = False
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = 64
    dims: tuple[int, ...] = (8, 16)
    mix: list[float] = field(default_factory=lambda: [0.5, 0.5])
    limit: int | None = None
    tag: str | None = "base"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3))


@dataclass
class Checked:
    steps: int = 10

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError("steps must be positive")


@dataclass
class Required:
    name: str
    size: int = 1


def parse(argv, **kwargs):
    """parse_config that raises ConfigError instead of exiting."""
    return parse_config(TrainConfig, argv, exit_on_error=False, **kwargs)


@pytest.fixture
def preset_dir(tmp_path: Path) -> Path:
    d = tmp_path / "presets"
    d.mkdir()
    (d / "default.toml").write_text("steps = 200\nbatch_size = 32\n[optim]\nlr = 3e-4\n")
    (d / "tiny.toml").write_text('steps = 5\ndevice = "cpu"\nlimit = 7\n')
    return d


# ----------------------------------------------------------------------------- defaults / types


def test_no_flags_gives_dataclass_defaults_including_nested_factory():
    cfg = parse([])
    assert cfg == TrainConfig()
    assert cfg.optim.lr == 2e-3  # from the parent's default_factory, not OptimConfig's 1e-3


def test_scalar_flags_convert_to_annotated_types():
    cfg = parse(["--steps", "7", "--out=runs/x", "--seed", "3", "--optim.lr", "1e-2"])
    assert cfg.steps == 7 and isinstance(cfg.steps, int)
    assert cfg.out == "runs/x"
    assert cfg.seed == 3
    assert cfg.optim.lr == pytest.approx(1e-2) and isinstance(cfg.optim.lr, float)


def test_underscore_and_dash_spellings_are_both_accepted():
    a = parse(["--batch-size", "5", "--optim.weight-decay", "0"])
    b = parse(["--batch_size", "5", "--optim.weight_decay=0"])
    assert a == b
    assert a.batch_size == 5 and a.optim.weight_decay == 0.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--resume"], True),
        (["--resume", "true"], True),
        (["--resume", "false"], False),
        (["--resume=yes"], True),
        (["--resume", "0"], False),
        (["--resume", "--no-resume"], False),
        (["--no-resume", "--resume"], True),
        (["--no_resume"], False),
    ],
)
def test_bool_flag_forms(argv, expected):
    assert parse(argv).resume is expected


def test_bool_flag_without_value_followed_by_another_flag():
    cfg = parse(["--resume", "--steps", "3"])
    assert cfg.resume is True and cfg.steps == 3


def test_nested_bool_flag_forms():
    assert parse(["--optim.amsgrad"]).optim.amsgrad is True
    assert parse(["--optim.amsgrad", "--optim.no-amsgrad"]).optim.amsgrad is False
    assert parse(["--optim.amsgrad", "--no-optim.amsgrad"]).optim.amsgrad is False


def test_bool_rejects_non_boolean_value_and_negative_with_value():
    with pytest.raises(ConfigError, match=r"'resume'.*'maybe'|'maybe'.*'resume'"):
        parse(["--resume", "maybe"])
    with pytest.raises(ConfigError, match="--no-resume"):
        parse(["--no-resume=true"])


def test_literal_choice_accepted_and_rejected():
    assert parse(["--device", "cpu"]).device == "cpu"
    with pytest.raises(ConfigError, match=r"--device.*'gpu'.*'auto', 'cpu', 'cuda'"):
        parse(["--device", "gpu"])


def test_optional_takes_none_and_values():
    assert parse(["--limit", "12"]).limit == 12
    assert parse(["--limit", "none"]).limit is None
    assert parse(["--tag", "None"]).tag is None
    assert parse(["--tag", "x"]).tag == "x"
    with pytest.raises(ConfigError, match=re.escape("'limit' (expected int | None)")):
        parse(["--limit", "lots"])


def test_sequences_comma_separated_and_repeated():
    assert parse(["--dims", "1,2,3"]).dims == (1, 2, 3)
    assert parse(["--dims", "1", "--dims", "2,3"]).dims == (1, 2, 3)
    assert parse(["--dims", ""]).dims == ()
    cfg = parse(["--mix", "0.25,0.75"])
    assert cfg.mix == [0.25, 0.75] and isinstance(cfg.mix, list)
    assert parse(["--optim.betas", "0.8,0.95"]).optim.betas == (0.8, 0.95)


def test_sequence_errors_name_field_and_type():
    with pytest.raises(ConfigError, match=r"'dims'.*tuple\[int, \.\.\.\]"):
        parse(["--dims", "1,x"])
    with pytest.raises(ConfigError, match=r"'optim\.betas'.*tuple\[float, float\]"):
        parse(["--optim.betas", "0.9"])  # fixed-length tuple needs exactly two values


def test_repeated_scalar_flag_last_wins():
    assert parse(["--steps", "1", "--steps", "2"]).steps == 2


# ----------------------------------------------------------------------------- errors


def test_wrong_type_names_flag_field_value_and_expected_type():
    with pytest.raises(ConfigError) as info:
        parse(["--steps", "ten"])
    message = str(info.value)
    assert "--steps" in message and "'steps'" in message
    assert "'ten'" in message and "int" in message


def test_unknown_flag_rejected_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown flag --stepz.*did you mean --steps"):
        parse(["--stepz", "3"])
    with pytest.raises(ConfigError, match=re.escape("unknown flag --optim.lrr")):
        parse(["--optim.lrr=1"])


def test_prefix_of_a_flag_is_not_accepted():
    with pytest.raises(ConfigError, match="unknown flag --step"):
        parse(["--step", "3"])


def test_stray_positional_rejected():
    with pytest.raises(ConfigError, match="unexpected argument 'oops'"):
        parse(["oops"])


def test_cli_errors_exit_2_with_argparse_message(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, ["--steps", "ten"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "error: argument --steps: invalid value 'ten'" in err


def test_post_init_value_error_becomes_config_error():
    with pytest.raises(ConfigError, match="steps must be positive"):
        parse_config(Checked, ["--steps", "0"], exit_on_error=False)


def test_required_field_must_be_given():
    with pytest.raises(ConfigError, match=r"missing required field.*name"):
        parse_config(Required, [], exit_on_error=False)
    assert parse_config(Required, ["--name", "a"], exit_on_error=False) == Required("a")


def test_reserved_and_unsupported_fields_fail_at_definition():
    @dataclass
    class UsesPreset:
        preset: str = "x"

    @dataclass
    class UsesDict:
        table: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="reserved"):
        parse_config(UsesPreset, [], exit_on_error=False)
    with pytest.raises(TypeError, match="'table'"):
        parse_config(UsesDict, [], exit_on_error=False)


# ----------------------------------------------------------------------------- help


def test_help_lists_every_field_with_help_and_default(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, ["--help"], description="Train the thing.")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Train the thing." in out
    for flag in [
        "--out",
        "--device",
        "--seed",
        "--resume",
        "--no-resume",
        "--steps",
        "--batch-size",
        "--dims",
        "--mix",
        "--limit",
        "--tag",
        "--optim.lr",
        "--optim.betas",
        "--optim.weight-decay",
        "--optim.amsgrad",
        "--preset",
    ]:
        assert flag in out, flag
    assert "output directory (default: runs/ghm)" in out
    assert "optimizer steps (default: 1000)" in out
    assert "{auto,cpu,cuda}" in out
    assert "(default: 8,16)" in out
    assert "(default: none)" in out
    assert "peak learning rate (default: 0.002)" in out


def test_help_shows_preset_values_and_lists_presets(capsys, preset_dir):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["-h"], preset_dir=preset_dir)
    out = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    assert "(default: 1000; preset 'default' sets 200)" in out
    assert "default, tiny" in out


# ----------------------------------------------------------------------------- presets


def test_precedence_defaults_then_preset_then_cli(preset_dir):
    cfg = parse([], preset_dir=preset_dir)  # default.toml applies
    assert (cfg.steps, cfg.batch_size, cfg.optim.lr, cfg.seed) == (200, 32, 3e-4, 0)
    # nested preset table overrides one field and keeps the rest of the factory default
    assert cfg.optim.weight_decay == 0.1
    cfg = parse(["--steps", "9", "--optim.lr", "0.5"], preset_dir=preset_dir)
    assert (cfg.steps, cfg.batch_size, cfg.optim.lr) == (9, 32, 0.5)


def test_named_preset_replaces_default_preset(preset_dir):
    cfg = parse(["--preset", "tiny"], preset_dir=preset_dir)
    assert (cfg.steps, cfg.device, cfg.limit) == (5, "cpu", 7)
    assert cfg.batch_size == 64 and cfg.optim.lr == 2e-3  # default.toml not applied
    cfg = parse(["--steps", "6", "--preset=tiny"], preset_dir=preset_dir)
    assert cfg.steps == 6  # CLI beats preset wherever --preset appears


def test_preset_by_path_and_no_default_preset(preset_dir, tmp_path):
    other = tmp_path / "mine.toml"
    other.write_text("seed = 11\n")
    cfg = parse(["--preset", str(other)], preset_dir=preset_dir)
    assert cfg.seed == 11 and cfg.steps == 1000
    assert parse([], preset_dir=preset_dir, default_preset=None).steps == 1000


def test_unknown_preset_lists_available(preset_dir):
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*default, tiny"):
        parse(["--preset", "huge"], preset_dir=preset_dir)


def test_preset_unknown_key_names_file_and_key(preset_dir):
    bad = preset_dir / "bad.toml"
    bad.write_text("[optim]\nlrr = 0.1\n")
    with pytest.raises(ConfigError) as info:
        parse(["--preset", "bad"], preset_dir=preset_dir)
    assert str(bad) in str(info.value)
    assert "'optim.lrr'" in str(info.value) and "optim.lr" in str(info.value)


def test_preset_wrong_type_names_file_field_value_and_type(preset_dir):
    bad = preset_dir / "bad.toml"
    bad.write_text('steps = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_preset(TrainConfig, bad)
    message = str(info.value)
    assert str(bad) in message and "'steps'" in message
    assert "'many'" in message and "expected int" in message


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("resume = 1\n", "'resume'"),  # an int is not a bool
        ("steps = 2.5\n", "'steps'"),  # a float is not an int
        ("steps = true\n", "'steps'"),  # a bool is not an int
        ('device = "gpu"\n', "'device'"),
        ("dims = [1, 2.5]\n", "'dims'"),
        ("optim = 3\n", "[optim]"),  # a section must be a table
        ("steps = [\n", "not valid TOML"),
    ],
)
def test_preset_rejects_bad_values(tmp_path, toml, fragment):
    path = tmp_path / "p.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_preset(TrainConfig, path)


def test_preset_value_forms(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('optim.lr = 0\nlimit = "none"\ndims = [4]\n')
    cfg = parse(["--preset", str(path)])
    assert cfg.optim.lr == 0.0 and isinstance(cfg.optim.lr, float)  # int accepted for float
    assert cfg.limit is None
    assert cfg.dims == (4,)


def test_broken_default_preset_exits_2(preset_dir, capsys):
    (preset_dir / "default.toml").write_text("nope = 1\n")
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, [], preset_dir=preset_dir)
    assert info.value.code == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dict / json


def test_config_to_dict_is_json_native_and_nested():
    d = config_to_dict(TrainConfig())
    assert d["dims"] == [8, 16]
    assert d["optim"] == {"lr": 2e-3, "betas": [0.9, 0.999], "weight_decay": 0.1, "amsgrad": False}
    assert json.loads(json.dumps(d)) == d


def test_config_from_dict_round_trip_and_partial():
    cfg = parse(["--dims", "3", "--limit", "4", "--optim.amsgrad", "--tag", "none"])
    assert config_from_dict(TrainConfig, config_to_dict(cfg)) == cfg
    partial = config_from_dict(TrainConfig, {"optim": {"lr": 0.5}})
    assert partial.optim.lr == 0.5 and partial.optim.weight_decay == 0.1
    assert partial.steps == 1000


def test_config_from_dict_rejects_unknown_and_wrong_types():
    with pytest.raises(ConfigError, match=re.escape("unknown key 'optim.beta'")):
        config_from_dict(TrainConfig, {"optim": {"beta": 1}})
    with pytest.raises(ConfigError, match=r"'seed' got '3' \(str\), expected int"):
        config_from_dict(TrainConfig, {"seed": "3"})


def test_save_and_load_config_round_trip(tmp_path):
    cfg = parse(["--steps", "3", "--optim.betas", "0.5,0.6", "--limit", "none"])
    path = tmp_path / "run" / "config.json"
    save_config(cfg, path)
    assert json.loads(path.read_text())["optim"]["betas"] == [0.5, 0.6]
    assert load_config(TrainConfig, path) == cfg
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]  # no temp files


def test_load_config_errors_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"steps": 1, "old_field": 2}))
    with pytest.raises(ConfigError, match=r"config\.json.*unknown key 'old_field'"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "missing.json")


def test_path_fields_round_trip(tmp_path):
    @dataclass
    class WithPath:
        data: Path = Path("data")

    cfg = parse_config(WithPath, ["--data", str(tmp_path)], exit_on_error=False)
    assert cfg.data == tmp_path
    save_config(cfg, tmp_path / "c.json")
    assert load_config(WithPath, tmp_path / "c.json") == cfg
