"""Tests for mm_train.config: the tyro CLI, presets, --config, ranges, errors, config.json."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mm_train.config import (
    ConfigError,
    arg,
    config_from_dict,
    config_to_dict,
    flag,
    leaf_fields,
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


def test_bool_takes_no_value():
    with pytest.raises(ConfigError, match="Unrecognized options: maybe"):
        parse(["--resume", "maybe"])


def test_literal_choice_accepted_and_rejected():
    assert parse(["--device", "cpu"]).device == "cpu"
    with pytest.raises(ConfigError, match=r"invalid choice 'gpu' for argument '--device'"):
        parse(["--device", "gpu"])


def test_optional_takes_none_and_values():
    assert parse(["--limit", "12"]).limit == 12
    assert parse(["--limit", "none"]).limit is None
    assert parse(["--tag", "None"]).tag is None
    assert parse(["--tag", "x"]).tag == "x"
    with pytest.raises(ConfigError, match="--limit"):
        parse(["--limit", "lots"])


def test_sequences_comma_or_space_separated_and_the_last_occurrence_wins():
    assert parse(["--dims", "1,2,3"]).dims == (1, 2, 3)
    assert parse(["--dims", "1", "2", "3"]).dims == (1, 2, 3)
    assert parse(["--dims", "1", "--steps", "4", "--dims", "2,3"]).dims == (2, 3)  # last wins
    assert parse(["--dims=4,5"]).dims == (4, 5)
    assert parse(["--dims", ""]).dims == ()
    cfg = parse(["--mix", "0.25,0.75"])
    assert cfg.mix == [0.25, 0.75] and isinstance(cfg.mix, list)
    assert parse(["--optim.betas", "0.8,0.95"]).optim.betas == (0.8, 0.95)


def test_sequence_errors_name_the_flag():
    with pytest.raises(ConfigError, match="--dims"):
        parse(["--dims", "1,x"])
    with pytest.raises(ConfigError, match=re.escape("--optim.betas")):
        parse(["--optim.betas", "0.9"])  # fixed-length tuple needs exactly two values


def test_repeated_scalar_flag_last_wins():
    assert parse(["--steps", "1", "--steps", "2"]).steps == 2


# ----------------------------------------------------------------------------- errors


def test_wrong_type_names_flag_and_value():
    with pytest.raises(ConfigError) as info:
        parse(["--steps", "ten"])
    message = str(info.value)
    assert "--steps" in message and "'ten'" in message


def test_unknown_flag_rejected_with_suggestion():
    with pytest.raises(
        ConfigError, match=r"Unrecognized options: --stepz.*Perhaps you meant.*--steps"
    ):
        parse(["--stepz", "3"])
    with pytest.raises(ConfigError, match=re.escape("--optim.lrr")):
        parse(["--optim.lrr=1"])


def test_prefix_of_a_flag_is_not_accepted():
    with pytest.raises(ConfigError, match="Unrecognized options: --step"):
        parse(["--step", "3"])


def test_stray_positional_rejected():
    with pytest.raises(ConfigError, match="Unrecognized options: oops"):
        parse(["oops"])


def test_cli_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, ["--steps", "ten"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "ten" in err


def test_post_init_value_error_becomes_config_error():
    with pytest.raises(ConfigError, match="steps must be positive"):
        parse_config(Checked, ["--steps", "0"], exit_on_error=False)


def test_required_field_must_be_given():
    with pytest.raises(ConfigError, match=r"--name"):
        parse_config(Required, [], exit_on_error=False)
    assert parse_config(Required, ["--name", "a"], exit_on_error=False) == Required("a")


def test_reserved_and_unsupported_fields_fail_at_definition():
    @dataclass
    class UsesPreset:
        preset: str = "x"

    @dataclass
    class UsesConfig:
        config: str = "x"

    @dataclass
    class UsesDict:
        table: dict = field(default_factory=dict)

    for cls in (UsesPreset, UsesConfig):
        with pytest.raises(TypeError, match="reserved"):
            parse_config(cls, [], exit_on_error=False)
    with pytest.raises(TypeError, match="'table'"):
        parse_config(UsesDict, [], exit_on_error=False)


# ----------------------------------------------------------------------------- ranges, validate


@dataclass
class Ranged:
    p: float = arg(0.2, "flip probability", ge=0, le=1)
    n_child: int = arg(3, "children per node", ge=1)
    tau: float = arg(0.1, "temperature", gt=0)
    widths: tuple[int, ...] = arg((4, 4), "hidden widths", ge=1)
    limit: int | None = arg(None, "optional cap", ge=1)
    lo: float = 0.0
    hi: float = 1.0

    def validate(self) -> None:
        if self.lo >= self.hi:
            raise ValueError(f"{flag('lo')} {self.lo} must be below {flag('hi')} {self.hi}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--p", "1.5"], "--p 1.5: must be in [0, 1]"),
        (["--p=-0.1"], "--p -0.1: must be in [0, 1]"),
        (["--n-child", "0"], "--n-child 0: must be >= 1"),
        (["--tau", "0"], "--tau 0: must be > 0"),
        (["--widths", "4,0"], "--widths 4,0: must be >= 1"),
        (["--limit", "0"], "--limit 0: must be >= 1"),
        (["--lo", "2"], "--lo 2.0 must be below --hi 1.0"),
    ],
)
def test_out_of_range_values_name_the_flag_and_the_range(argv, message):
    with pytest.raises(ConfigError) as info:
        parse_config(Ranged, argv, exit_on_error=False)
    assert str(info.value) == message


def test_in_range_values_and_none_pass():
    cfg = parse_config(Ranged, ["--p", "1", "--limit", "none"], exit_on_error=False)
    assert cfg.p == 1.0 and cfg.limit is None


def test_range_errors_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(Ranged, ["--p", "1.5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --p 1.5: must be in [0, 1]"


def test_range_is_checked_in_presets_and_saved_configs(tmp_path):
    preset = tmp_path / "bad.toml"
    preset.write_text("p = 2.0\n")
    with pytest.raises(ConfigError, match=re.escape("--p 2: must be in [0, 1]")):
        parse_config(Ranged, ["--preset", str(preset)], exit_on_error=False)
    with pytest.raises(ConfigError, match=re.escape("--n-child 0: must be >= 1")):
        config_from_dict(Ranged, {"n_child": 0})


def test_help_shows_the_range(capsys):
    with pytest.raises(SystemExit):
        parse_config(Ranged, ["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "flip probability [in [0, 1]]" in out
    assert "children per node [>= 1]" in out


def test_arg_marks_fields_that_may_change_on_resume():
    @dataclass
    class WithPolicy:
        steps: int = arg(10, "steps", may_change=True)
        lr: float = arg(0.1, "lr")

    policy = {leaf.path: leaf.may_change for leaf in leaf_fields(WithPolicy)}
    assert policy == {"steps": True, "lr": False}


# ----------------------------------------------------------------------------- --config


def test_config_flag_reruns_a_saved_config_and_flags_override(tmp_path, preset_dir):
    cfg = parse(["--steps", "3", "--optim.lr", "0.25", "--resume"], preset_dir=preset_dir)
    save_config(cfg, tmp_path / "run" / "config.json")
    again = parse(["--config", str(tmp_path / "run" / "config.json")], preset_dir=preset_dir)
    assert again.steps == 3 and again.optim.lr == 0.25
    assert again.batch_size == 32  # the preset's value, kept in the saved config
    assert again.resume is False  # an action, not part of the experiment
    by_dir = parse(["--config", str(tmp_path / "run"), "--steps", "8"], preset_dir=preset_dir)
    assert by_dir.steps == 8 and by_dir.optim.lr == 0.25
    with pytest.raises(ConfigError, match="not both"):
        parse(["--config", str(tmp_path / "run"), "--preset", "tiny"], preset_dir=preset_dir)
    with pytest.raises(ConfigError, match="config file not found"):
        parse(["--config", str(tmp_path / "nope.json")])


def test_help_lists_every_field_with_help_and_default_grouped(capsys):
    with pytest.raises(SystemExit) as info:
        parse_config(TrainConfig, ["--help"], description="Train the thing.")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Train the thing." in out
    for flag_name in [
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
        "--config",
    ]:
        assert flag_name in out, flag_name
    flat = " ".join(out.split())
    assert "output directory (default: runs/ghm)" in flat
    assert "optimizer steps (default: 1000)" in flat
    assert "{auto,cpu,cuda}" in flat
    assert "(default: 8 16)" in flat
    assert "(default: None)" in flat
    assert "peak learning rate (default: 0.002)" in flat
    assert "optim options" in flat  # nested dataclass fields form their own group


def test_help_shows_preset_values_and_lists_presets(capsys, preset_dir):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["-h"], preset_dir=preset_dir)
    out = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    assert "optimizer steps (default: 200)" in out  # the preset's value
    assert "available: default, tiny" in out


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
    with pytest.raises(ConfigError, match=r"--preset: unknown preset 'huge'.*default, tiny"):
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
