"""Typed dataclass configs: the CLI (tyro), TOML presets, config.json and value checks.

The dataclass is the one source of truth. Each field is a flag (``--field-name`` or
``--field_name``), a nested dataclass field ``optim`` gives ``--optim.lr`` and a TOML
table ``[optim]``, and ``--help`` groups the flags by nested dataclass. Values resolve as

    dataclass defaults < preset (TOML) or saved config (--config run/config.json) < flags

The command line itself is parsed by `tyro <https://brentyi.github.io/tyro/>`_ from the
dataclass with the preset (or saved config) as its defaults. This module adds what tyro
does not do: presets and saved configs read with the same type checks (a typo or a
wrong type fails at start-up, naming the file and the field), comma-separated lists
(``--dims 1,2,3`` as well as ``--dims 1 2 3``), ``none`` for optional fields, and value
checks declared on the field (``arg(0.2, "flip probability", ge=0, le=1)``) that report
the flag and the allowed range. Every error exits with status 2 before any file is
written; a config may add cross-field checks in a ``validate()`` method that raises
``ValueError`` (name the flags with :func:`flag`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import sys
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union

from mm_train.logging import atomic_write_json

__all__ = [
    "ConfigError",
    "arg",
    "check_config",
    "config_from_dict",
    "config_to_dict",
    "flag",
    "leaf_fields",
    "load_config",
    "load_preset",
    "parse_config",
    "save_config",
]

T = TypeVar("T")

_RESERVED = frozenset({"help", "preset", "config"})
# Fields that say what to do with the run directory rather than what to train; a saved
# config given back with --config starts a new run, so these are reset to False.
RUN_ACTIONS = ("resume", "overwrite")


class ConfigError(ValueError):
    """A config value, preset or flag that does not fit the config dataclass."""


class _Mismatch(Exception):
    """Internal: a value that does not convert to a type (the caller adds the context)."""


# --------------------------------------------------------------------------- declaring fields


def arg(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    may_change: bool = False,
) -> Any:
    """A dataclass field with help text, allowed range and resume policy.

    ``ge``/``gt``/``le``/``lt`` bound a number (every element of a sequence; None passes);
    a value outside them is a ``ConfigError`` naming the flag and the range, raised before
    the run writes anything. ``may_change=True`` marks a field that ``--resume`` accepts
    with a new value (steps to extend, logging cadence, device, ...); every other field
    must match the run's saved config.
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    text = help.strip()
    if bounds:
        text = f"{text} [{_range_text(bounds)}]".strip()
    metadata = {"help": text, "bounds": bounds, "may_change": may_change}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def _range_text(bounds: Mapping[str, float]) -> str:
    """``[0, 1]``-style text of a field's bounds (``>= 1`` when one-sided)."""
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if lo and hi:
        return f"in {lo[0]}{_show(lo[1])}, {_show(hi[1])}{hi[0]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {_show(lo[1])}"
    assert hi is not None
    return f"{'<=' if hi[0] == ']' else '<'} {_show(hi[1])}"


def flag(path: str) -> str:
    """The flag of a dotted field path: ``optim.weight_decay`` -> ``--optim.weight-decay``."""
    return "--" + path.replace("_", "-")


# --------------------------------------------------------------------------- types


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None`` / ``Optional[X]``; None when ``tp`` is not optional."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0]
        raise TypeError(f"unsupported union type {tp!r}: only `X | None` is supported")
    return None


def _is_dataclass_type(tp: Any) -> bool:
    """Whether ``tp`` is a dataclass class (not an instance)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _seq_args(tp: Any) -> tuple[type, list[Any] | None, Any] | None:
    """For sequence types: (container, per-position types or None, element type)."""
    origin = typing.get_origin(tp)
    if origin is list:
        (elem,) = typing.get_args(tp) or (None,)
        if elem is None:
            raise TypeError("bare `list` is not supported; write list[int], list[str], ...")
        return list, None, elem
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple, None, args[0]
        if not args or Ellipsis in args:
            raise TypeError(f"unsupported tuple type {tp!r}")
        return tuple, list(args), None
    if tp in (list, tuple):
        raise TypeError(f"bare `{tp.__name__}` is not supported; write {tp.__name__}[int, ...]")
    return None


def _check_supported(tp: Any, where: str) -> None:
    """Raise TypeError if the annotation ``tp`` cannot be read from a flag or TOML."""
    try:
        inner = _optional_inner(tp)
        if inner is not None:
            _check_supported(inner, where)
            return
        if typing.get_origin(tp) is Literal:
            return
        seq = _seq_args(tp)
        if seq is not None:
            _, positions, elem = seq
            for t in positions if positions is not None else [elem]:
                if _seq_args(t) is not None or _is_dataclass_type(t):
                    raise TypeError(f"nested sequences/dataclasses in {tp!r} are not supported")
                _check_supported(t, where)
            return
        if tp in (int, float, str, bool, Path):
            return
        raise TypeError(f"unsupported type {tp!r}")
    except TypeError as exc:
        raise TypeError(f"config field {where!r}: {exc}") from None


def _type_name(tp: Any) -> str:
    """Readable name of an annotation for error messages."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_type_name(inner)} | None"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    seq = _seq_args(tp)
    if seq is not None:
        container, positions, elem = seq
        if positions is not None:
            return f"tuple[{', '.join(_type_name(p) for p in positions)}]"
        if container is tuple:
            return f"tuple[{_type_name(elem)}, ...]"
        return f"list[{_type_name(elem)}]"
    return getattr(tp, "__name__", repr(tp))


def _convert(value: Any, tp: Any) -> Any:
    """Check a TOML/JSON value against ``tp`` strictly, or raise _Mismatch.

    An int is not a str and "3" is not an int; an int is accepted for a float, a list for a
    tuple, and the string "none" (TOML has no null) for an optional field.
    """
    inner = _optional_inner(tp)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        return _convert(value, inner)
    if typing.get_origin(tp) is Literal:
        for choice in typing.get_args(tp):
            if type(choice) is type(value) and choice == value:
                return choice
        raise _Mismatch
    seq = _seq_args(tp)
    if seq is not None:
        container, positions, elem = seq
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if positions is not None:
            if len(value) != len(positions):
                raise _Mismatch
            return container(_convert(v, t) for v, t in zip(value, positions))
        return container(_convert(v, elem) for v in value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    if tp is Path and isinstance(value, (str, Path)):
        return Path(value)
    raise _Mismatch


def _show(value: Any) -> str:
    """A value as it would be typed on the command line (for messages)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value) if value else '""'
    return str(value)


# --------------------------------------------------------------------------- fields


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One settable (non-dataclass) field, addressed by its dotted path."""

    path: str
    tp: Any
    metadata: Mapping[str, Any]

    @property
    def may_change(self) -> bool:
        """Whether ``--resume`` accepts a new value of this field."""
        return bool(self.metadata.get("may_change", False))


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (handles ``from __future__ import annotations``)."""
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # NameError for unresolvable string annotations, among others
        raise TypeError(f"cannot resolve the annotations of {cls.__name__}: {exc}") from exc


def _init_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields that ``__init__`` accepts."""
    if not _is_dataclass_type(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return [f for f in dataclasses.fields(cls) if f.init]


def leaf_fields(cls: type, prefix: str = "") -> Iterator[Leaf]:
    """Every leaf field of the config class ``cls`` (recursing into nested dataclasses)."""
    hints = _type_hints(cls)
    for f in _init_fields(cls):
        path = prefix + f.name
        if not prefix and f.name in _RESERVED:
            raise TypeError(f"config field name {f.name!r} is reserved for the CLI")
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            yield from leaf_fields(tp, path + ".")
            continue
        _check_supported(tp, path)
        yield Leaf(path, tp, f.metadata)


def _get(cfg: Any, path: str) -> Any:
    """The value at a dotted path of a config instance."""
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _validate_tree(cls: type, data: Mapping[str, Any], source: str, prefix: str = "") -> dict:
    """Check a (partial) nested dict against ``cls``; return ``{dotted path: value}``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table for {prefix.rstrip('.') or 'config'}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in _init_fields(cls)}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = prefix + str(key)
        if key not in fields:
            import difflib

            known = [prefix + name for name in fields]
            close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {path!r}{hint}")
        tp = hints[key]
        if _is_dataclass_type(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{source}: {path!r} is a section ({tp.__name__}); "
                    f"write it as a table [{path}], got {value!r}"
                )
            flat.update(_validate_tree(tp, value, source, path + "."))
            continue
        _check_supported(tp, path)
        try:
            flat[path] = _convert(value, tp)
        except _Mismatch:
            raise ConfigError(
                f"{source}: field {path!r} got {value!r} ({type(value).__name__}), "
                f"expected {_type_name(tp)}"
            ) from None
    return flat


def _construct(
    cls: type[T],
    flat: Mapping[str, Any],
    source: str,
    prefix: str = "",
    base=None,
    missing_value: Any = dataclasses.MISSING,
) -> T:
    """Build ``cls`` from validated ``flat`` values, falling back to ``base`` or defaults.

    A required field without a value is an error, or ``missing_value`` when one is given
    (``tyro.MISSING``: the command line must then supply it).
    """
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for f in _init_fields(cls):
        path = prefix + f.name
        if _is_dataclass_type(hints[f.name]):
            sub_base = getattr(base, f.name) if base is not None else None
            if sub_base is None and f.default_factory is not dataclasses.MISSING:
                sub_base = f.default_factory()
            elif sub_base is None and f.default is not dataclasses.MISSING:
                sub_base = f.default
            kwargs[f.name] = _construct(
                hints[f.name], flat, source, path + ".", sub_base, missing_value
            )
        elif path in flat:
            kwargs[f.name] = flat[path]
        elif base is not None:
            kwargs[f.name] = copy.deepcopy(getattr(base, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if missing_value is dataclasses.MISSING:
                missing.append(path)
            else:
                kwargs[f.name] = missing_value
    if missing:
        raise ConfigError(f"{source}: missing required field(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # raised by a __post_init__ check
        raise ConfigError(f"{source}: invalid {cls.__name__}: {exc}") from exc


def _bound_error(value: Any, bounds: Mapping[str, float]) -> bool:
    """Whether a number lies outside ``bounds``."""
    return (
        ("ge" in bounds and not value >= bounds["ge"])
        or ("gt" in bounds and not value > bounds["gt"])
        or ("le" in bounds and not value <= bounds["le"])
        or ("lt" in bounds and not value < bounds["lt"])
    )


def check_config(cfg: Any) -> None:
    """Check every field's declared range, then the config's ``validate()`` (if any).

    Raises ``ConfigError`` naming the flag, the value and the allowed range.
    """
    for leaf in leaf_fields(type(cfg)):
        bounds = leaf.metadata.get("bounds") or {}
        if not bounds:
            continue
        value = _get(cfg, leaf.path)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is not None and _bound_error(v, bounds):
                raise ConfigError(
                    f"{flag(leaf.path)} {_show(value)}: must be {_range_text(bounds)}"
                )
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


# --------------------------------------------------------------------------- dict / json


def _plain(value: Any) -> Any:
    """A config value as JSON-native data (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as a nested dict of JSON-native values (init fields only)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in _init_fields(type(cfg))}


def config_from_dict(config_cls: type[T], d: Mapping[str, Any], *, source: str = "config") -> T:
    """Build ``config_cls`` from a nested dict, rejecting unknown keys, wrong types and
    values outside the declared ranges."""
    cfg = _construct(config_cls, _validate_tree(config_cls, d, source), source)
    check_config(cfg)
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON to ``path`` atomically."""
    atomic_write_json(path, config_to_dict(cfg))


def _read_json_config(path: Path) -> Any:
    """The parsed JSON of a config file, or ConfigError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None


def load_config(config_cls: type[T], path: str | Path) -> T:
    """Read a config written by ``save_config`` (e.g. ``OUT/config.json``)."""
    path = Path(path)
    return config_from_dict(config_cls, _read_json_config(path), source=f"config file {path}")


def load_preset(config_cls: type, path: str | Path) -> dict[str, Any]:
    """Read a TOML preset and check it against ``config_cls``; returns ``{dotted path: value}``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"preset file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {path} is not valid TOML: {exc}") from None
    return _validate_tree(config_cls, data, f"preset {path}")


# --------------------------------------------------------------------------- CLI


def _take_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """Remove every ``name VALUE`` / ``name=VALUE`` from ``argv``; return (rest, last value)."""
    rest: list[str] = []
    value = None
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            rest.extend(argv[i:])
            break
        if token == name:
            if i + 1 >= len(argv):
                raise ConfigError(f"{name} needs a value")
            value = argv[i + 1]
            i += 2
            continue
        if token.startswith(name + "="):
            value = token.split("=", 1)[1]
        else:
            rest.append(token)
        i += 1
    return rest, value


def _available_presets(preset_dir: Path | None) -> list[str]:
    """Names of the ``*.toml`` files in ``preset_dir``."""
    if preset_dir is None or not Path(preset_dir).is_dir():
        return []
    return sorted(p.stem for p in Path(preset_dir).glob("*.toml"))


def _find_preset(name: str, preset_dir: Path | None) -> Path:
    """Path of preset ``name`` (a name in ``preset_dir`` or a path to a .toml file)."""
    if name.endswith(".toml") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--preset: file not found: {path}")
        return path
    path = Path(preset_dir) / f"{name}.toml" if preset_dir is not None else None
    if path is None or not path.is_file():
        available = ", ".join(_available_presets(preset_dir)) or "(none)"
        raise ConfigError(f"--preset: unknown preset {name!r}; available: {available}")
    return path


def _split_values(argv: list[str], leaves: list[Leaf]) -> list[str]:
    """Spell list values and None the way tyro reads them.

    ``--dims 1,2`` becomes ``--dims 1 2`` and ``none`` after an optional flag ``None``;
    ``--field_name`` is spelled ``--field-name``. A repeated flag, list or not, is left for
    tyro: the last occurrence wins.
    """
    by_flag: dict[str, Leaf] = {}
    for leaf in leaves:
        by_flag[flag(leaf.path)] = leaf
        by_flag["--" + leaf.path] = leaf
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out.extend(argv[i:])
            break
        name, eq, inline = token.partition("=")
        leaf = by_flag.get(name) if token.startswith("--") else None
        i += 1
        if leaf is None:
            out.append(token)
            continue
        values = [inline] if eq else []
        while not eq and i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if _optional_inner(leaf.tp) is not None:
            values = ["None" if v.strip().lower() == "none" else v for v in values]
        if _seq_args(_optional_inner(leaf.tp) or leaf.tp) is not None:
            values = [p.strip() for v in values for p in v.split(",") if p.strip()]
        out.extend([flag(leaf.path), *values])
    return out


def _tyro_cli(config_cls: type[T], args: list[str], default: T, description: str) -> T:
    """``tyro.cli`` with ``default`` as the defaults."""
    import tyro

    return tyro.cli(config_cls, args=args, default=default, description=description or None)


def _resolve(
    config_cls: type[T],
    argv: list[str],
    preset_dir: Path | None,
    default_preset: str | None,
    description: str,
    quiet: bool,
) -> T:
    """parse_config without the exit: raises ConfigError on any problem."""
    leaves = list(leaf_fields(config_cls))
    argv, preset_name = _take_option(argv, "--preset")
    argv, config_file = _take_option(argv, "--config")
    if preset_name is not None and config_file is not None:
        raise ConfigError("give --preset or --config, not both (a saved config is complete)")
    if config_file is not None:
        path = Path(config_file)
        if path.is_dir():
            path = path / "config.json"
        data = _read_json_config(path)
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in RUN_ACTIONS}
        base = config_from_dict(config_cls, data, source=f"--config {path}")
        source = f"--config {path}"
    else:
        if preset_name is not None:
            preset_path: Path | None = _find_preset(preset_name, preset_dir)
        elif default_preset and preset_dir is not None:
            candidate = Path(preset_dir) / f"{default_preset}.toml"
            preset_path = candidate if candidate.is_file() else None
        else:
            preset_path = None
        flat = load_preset(config_cls, preset_path) if preset_path is not None else {}
        source = f"preset {preset_path}" if preset_path is not None else "defaults"
        import tyro

        base = _construct(config_cls, flat, source, missing_value=tyro.MISSING)
    notes = [
        "--preset NAME|FILE.toml: start from a preset"
        + (f" (available: {', '.join(_available_presets(preset_dir))})" if preset_dir else ""),
        "--config RUN/config.json: start from a saved run's config (flags override it)",
        "Defaults shown are after the preset; lists take 1,2,3 or 1 2 3; optional values take none.",
    ]
    text = "\n".join(filter(None, [description.strip(), *notes]))
    args = _split_values(argv, leaves)
    if quiet:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
                cfg = _tyro_cli(config_cls, args, base, text)
        except SystemExit as exc:
            if exc.code in (0, None):
                raise
            message = " ".join(line.strip(" │╭╮╰╯─") for line in buffer.getvalue().splitlines())
            raise ConfigError(" ".join(message.split())) from None
    else:
        cfg = _tyro_cli(config_cls, args, base, text)
    check_config(cfg)
    return cfg


def _exit_with(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with status 2 (argparse's convention)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def parse_config(
    config_cls: type[T],
    argv: list[str] | None = None,
    *,
    preset_dir: Path | None = None,
    default_preset: str | None = "default",
    description: str = "",
    exit_on_error: bool = True,
) -> T:
    """Build ``config_cls`` from defaults < preset or ``--config`` < ``argv`` flags.

    ``--preset NAME`` picks ``preset_dir/NAME.toml`` (or a path to a .toml file); without
    it ``preset_dir/<default_preset>.toml`` applies when present. ``--config FILE`` starts
    from a saved ``config.json`` (its ``resume``/``overwrite`` are not carried over).
    Errors (bad flags and values, fields out of range, a ``validate()`` failure) print a
    message and exit with status 2, or raise ``ConfigError`` when ``exit_on_error`` is False.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    preset_dir = Path(preset_dir) if preset_dir is not None else None
    try:
        return _resolve(
            config_cls, args, preset_dir, default_preset, description, quiet=not exit_on_error
        )
    except ConfigError as exc:
        if not exit_on_error:
            raise
        _exit_with(str(exc))
