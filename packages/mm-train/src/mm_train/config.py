"""Typed dataclass configs, the CLI generated from them, TOML presets and config.json.

The dataclass is the one source of truth: each field is a flag (``--field-name`` or
``--field_name``) with its default and ``field(metadata={"help": ...})`` text, a nested
dataclass field ``optim`` gives flags ``--optim.lr`` and a TOML table ``[optim]``.
Values are resolved as

    dataclass defaults < preset (a TOML file) < command-line flags

and checked against the annotations, so a typo or a wrong type fails at start-up with a
message naming the field, not an hour into a run. Supported field types: ``int``,
``float``, ``str``, ``bool``, ``pathlib.Path``, ``Literal[...]``, ``X | None``,
``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]`` and nested dataclasses.

On the command line booleans take ``--flag`` / ``--no-flag`` / ``--flag true|false``,
optional fields take ``none``, sequences take ``--dims 1,2,3`` or a repeated
``--dims 1 --dims 2``. TOML has no null, so a preset writes ``"none"`` for None.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
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
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_preset",
    "parse_config",
    "save_config",
]

T = TypeVar("T")

_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})
_RESERVED = frozenset({"help", "preset"})


class ConfigError(ValueError):
    """A config value, preset or flag that does not fit the config dataclass."""


class _Mismatch(Exception):
    """Internal: a value that does not convert to a type (the caller adds the context)."""


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
    """Raise TypeError if the annotation ``tp`` cannot be parsed from a flag or TOML."""
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
        if tp in (int, float, str, bool, Path, Any):
            return
        raise TypeError(f"unsupported type {tp!r}")
    except TypeError as exc:
        raise TypeError(f"config field {where!r}: {exc}") from None


def _type_name(tp: Any) -> str:
    """Readable name of an annotation for error messages and help."""
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
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", repr(tp))


def _convert(value: Any, tp: Any, *, text: bool) -> Any:
    """Convert ``value`` to ``tp`` or raise _Mismatch.

    ``text=True`` parses command-line strings (a sequence arrives as a list of strings);
    ``text=False`` checks values from TOML/JSON strictly (an int is not a str, "3" is not
    an int), except that an int is accepted for a float and a list for a tuple.
    """
    if tp is Any:
        return value
    inner = _optional_inner(tp)
    if inner is not None:
        if value is None:
            return None
        probe = value[0] if (text and isinstance(value, list) and len(value) == 1) else value
        if isinstance(probe, str) and probe.strip().lower() == "none":
            return None
        return _convert(value, inner, text=text)
    if typing.get_origin(tp) is Literal:
        for choice in typing.get_args(tp):
            if text and isinstance(value, str) and str(choice) == value.strip():
                return choice
            if not text and type(choice) is type(value) and choice == value:
                return choice
        raise _Mismatch
    seq = _seq_args(tp)
    if seq is not None:
        return _convert_sequence(value, seq, text=text)
    if text:
        if not isinstance(value, str):
            raise _Mismatch
        return _parse_text(value.strip() if tp is not str else value, tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _Mismatch
    raise _Mismatch


def _parse_text(value: str, tp: Any) -> Any:
    """Parse one command-line string as a scalar type."""
    if tp is str:
        return value
    if tp is Path:
        return Path(value)
    if tp is bool:
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _Mismatch
    try:
        return tp(value)
    except (TypeError, ValueError):
        raise _Mismatch from None


def _convert_sequence(value: Any, seq: tuple, *, text: bool) -> Any:
    """Convert a list/tuple value (or comma-separated strings when ``text``)."""
    container, positions, elem = seq
    if text:
        pieces = [value] if isinstance(value, str) else list(value)
        if all(isinstance(p, str) and p.strip() == "" for p in pieces):
            items: list[Any] = []
        else:
            items = [part.strip() for piece in pieces for part in str(piece).split(",")]
    else:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        items = list(value)
    if positions is not None:
        if len(items) != len(positions):
            raise _Mismatch
        out = [_convert(v, t, text=text) for v, t in zip(items, positions)]
    else:
        out = [_convert(v, elem, text=text) for v in items]
    return container(out)


def _show(value: Any) -> str:
    """A value as it would be typed on the command line (for help and messages)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value) if value else '""'
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


# --------------------------------------------------------------------------- fields


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One settable (non-dataclass) field, addressed by its dotted path."""

    path: str
    tp: Any
    help: str
    default: Any  # dataclasses.MISSING when the field is required


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


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory), or MISSING."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _leaves(cls: type, prefix: str = "", base: Any = None) -> Iterator[_Leaf]:
    """Every leaf field of ``cls`` (recursing into nested dataclasses), in field order.

    ``base`` is the default instance of a nested config (from the parent's default or
    factory); its values take the place of the nested class's own field defaults.
    """
    hints = _type_hints(cls)
    for f in _init_fields(cls):
        path = prefix + f.name
        if not prefix and f.name in _RESERVED:
            raise TypeError(f"config field name {f.name!r} is reserved for the CLI")
        tp = hints[f.name]
        default = getattr(base, f.name) if base is not None else _field_default(f)
        if _is_dataclass_type(tp):
            yield from _leaves(tp, path + ".", None if default is dataclasses.MISSING else default)
            continue
        _check_supported(tp, path)
        yield _Leaf(path, tp, str(f.metadata.get("help", "")), default)


def _suggest(name: str, known: list[str], prefix: str = "") -> str:
    """`` (did you mean X?)`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


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
            known = [prefix + name for name in fields]
            raise ConfigError(f"{source}: unknown key {path!r}{_suggest(path, known)}")
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
            flat[path] = _convert(value, tp, text=False)
        except _Mismatch:
            raise ConfigError(
                f"{source}: field {path!r} got {value!r} ({type(value).__name__}), "
                f"expected {_type_name(tp)}"
            ) from None
    return flat


def _construct(
    cls: type[T], flat: Mapping[str, Any], source: str, prefix: str = "", base=None
) -> T:
    """Build ``cls`` from validated ``flat`` values, falling back to defaults."""
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for f in _init_fields(cls):
        path = prefix + f.name
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            sub_base = getattr(base, f.name) if base is not None else _field_default(f)
            sub_base = None if sub_base is dataclasses.MISSING else sub_base
            kwargs[f.name] = _construct(tp, flat, source, path + ".", sub_base)
        elif path in flat:
            kwargs[f.name] = flat[path]
        elif base is not None:
            kwargs[f.name] = copy.deepcopy(getattr(base, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            missing.append(path)
    if missing:
        raise ConfigError(f"{source}: missing required field(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # raised by a __post_init__ check
        raise ConfigError(f"{source}: invalid {cls.__name__}: {exc}") from exc


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
    """Build ``config_cls`` from a nested dict, rejecting unknown keys and wrong types."""
    return _construct(config_cls, _validate_tree(config_cls, d, source), source)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON to ``path`` atomically."""
    atomic_write_json(path, config_to_dict(cfg))


def load_config(config_cls: type[T], path: str | Path) -> T:
    """Read a config written by ``save_config`` (e.g. ``OUT/config.json`` on resume)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    return config_from_dict(config_cls, data, source=f"config file {path}")


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


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise ConfigError (``raise_errors``) instead of exiting."""

    raise_errors = True

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise ConfigError(message)
        super().error(message)


class _BoolAction(argparse.Action):
    """``--flag`` (true), ``--flag VALUE`` (true/false/...), ``--no-flag`` (false)."""

    def __init__(self, option_strings, dest, negatives=(), **kwargs):
        self.negatives = frozenset(negatives)
        super().__init__(option_strings, dest, nargs="?", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.negatives:
            if values is not None:
                parser.error(f"argument {option_string}: takes no value (got {values!r})")
            values = "false"
        elif values is None:
            values = "true"
        setattr(namespace, self.dest, values)


class _SequenceAction(argparse.Action):
    """Collect the strings of every occurrence: ``--x 1,2 --x 3`` -> ["1,2", "3"]."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        collected = list(previous) if isinstance(previous, list) else []
        collected.extend(values if isinstance(values, list) else [values])
        setattr(namespace, self.dest, collected)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a boolean flag as ``--flag [BOOL], --no-flag``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _BoolAction):
            positive = [s for s in action.option_strings if s not in action.negatives]
            negative = [s for s in action.option_strings if s in action.negatives]
            return f"{positive[0]} [{action.metavar}], {negative[0]}"
        return super()._format_action_invocation(action)


def _flag(path: str) -> str:
    """The canonical flag of a dotted field path: ``optim.weight_decay`` -> ``--optim.weight-decay``."""
    return "--" + path.replace("_", "-")


def _negative_flags(path: str) -> list[str]:
    """``--no-x`` for ``x``; ``--optim.no-x`` and ``--no-optim.x`` for ``optim.x``."""
    head, _, name = path.rpartition(".")
    flags = [_flag(f"{head}.no_{name}" if head else f"no_{name}")]
    if head:
        flags.append(_flag(f"no_{path}"))
    return flags


def _metavar(tp: Any) -> str | None:
    """Placeholder shown in help (None lets argparse show {choices})."""
    inner = _optional_inner(tp)
    if inner is not None:
        base = _metavar(inner)
        return None if base is None else f"{base}|none"
    if typing.get_origin(tp) is Literal:
        return None
    seq = _seq_args(tp)
    if seq is not None:
        _, positions, elem = seq
        if positions is not None:
            return ",".join(_metavar(p) or "X" for p in positions)
        one = _metavar(elem) or "X"
        return f"{one}[,{one}...]"
    return _type_name(tp).upper()


def _literal_choices(tp: Any) -> list[str] | None:
    """String choices for argparse when ``tp`` is a (possibly optional) Literal."""
    inner = _optional_inner(tp)
    if inner is not None:
        choices = _literal_choices(inner)
        return None if choices is None else [*choices, "none"]
    if typing.get_origin(tp) is Literal:
        return [str(c) for c in typing.get_args(tp)]
    return None


def _help_text(leaf: _Leaf, preset_name: str | None, preset: Mapping[str, Any]) -> str:
    """Field help plus its default (and the preset's value when it overrides the default)."""
    parts = [leaf.help.strip()] if leaf.help.strip() else []
    if leaf.default is dataclasses.MISSING:
        tail = "required"
    else:
        tail = f"default: {_show(leaf.default)}"
    if leaf.path in preset:
        tail += f"; preset {preset_name!r} sets {_show(preset[leaf.path])}"
    parts.append(f"({tail})")
    return " ".join(parts).replace("%", "%%")


def _available_presets(preset_dir: Path | None) -> list[str]:
    """Names of the ``*.toml`` files in ``preset_dir``."""
    if preset_dir is None or not Path(preset_dir).is_dir():
        return []
    return sorted(p.stem for p in Path(preset_dir).glob("*.toml"))


def _build_parser(
    config_cls: type,
    leaves: list[_Leaf],
    *,
    preset_dir: Path | None,
    preset_name: str | None,
    preset: Mapping[str, Any],
    description: str,
) -> _Parser:
    """An argparse parser with one flag per leaf; values stay strings, absent flags absent."""
    presets = _available_presets(preset_dir)
    epilog = [
        "Precedence: field defaults < preset < command-line flags. Underscores and dashes in",
        "flag names are interchangeable; list flags take comma-separated values or repeat;",
        "optional fields take 'none'.",
    ]
    if preset_dir is not None:
        listing = ", ".join(presets) if presets else "(none)"
        epilog.append(f"Presets in {preset_dir}: {listing}")
    parser = _Parser(
        description=description or None,
        usage="%(prog)s [-h] [--preset NAME|FILE.toml] [--FIELD VALUE ...]",
        epilog="\n".join(epilog),
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--preset",
        metavar="NAME|FILE.toml",
        help="preset (TOML) to start from: a name in the preset directory or a path"
        + (f" (in use: {preset_name})" if preset_name else ""),
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for leaf in leaves:
        section, _, _ = leaf.path.rpartition(".")
        target: Any = parser
        if section:
            if section not in groups:
                groups[section] = parser.add_argument_group(f"[{section}]")
            target = groups[section]
        help_text = _help_text(leaf, preset_name, preset)
        tp = _optional_inner(leaf.tp) or leaf.tp
        if tp is bool:
            negatives = _negative_flags(leaf.path)
            target.add_argument(
                _flag(leaf.path),
                *negatives,
                dest=leaf.path,
                action=_BoolAction,
                negatives=negatives,
                metavar="BOOL" if leaf.tp is bool else "BOOL|none",
                help=help_text,
            )
        elif _seq_args(tp) is not None:
            target.add_argument(
                _flag(leaf.path),
                dest=leaf.path,
                action=_SequenceAction,
                metavar=_metavar(leaf.tp),
                help=help_text,
            )
        else:
            target.add_argument(
                _flag(leaf.path),
                dest=leaf.path,
                choices=_literal_choices(leaf.tp),
                metavar=_metavar(leaf.tp),
                help=help_text,
            )
    return parser


def _normalize_argv(argv: list[str], known: set[str]) -> list[str]:
    """Rewrite ``--field_name[=v]`` to ``--field-name[=v]`` for known flags."""
    out = []
    for i, token in enumerate(argv):
        if token == "--":
            out.extend(argv[i:])
            break
        if token.startswith("--"):
            name, sep, rest = token.partition("=")
            dashed = name.replace("_", "-")
            if dashed in known:
                token = dashed + sep + rest
        out.append(token)
    return out


def _preset_arg(argv: list[str]) -> str | None:
    """The value of the last ``--preset`` in ``argv`` (None if absent)."""
    value = None
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == "--preset" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith("--preset="):
            value = token.split("=", 1)[1]
    return value


def _find_preset(name: str, preset_dir: Path | None) -> Path:
    """Path of preset ``name`` (a name in ``preset_dir`` or a path to a .toml file)."""
    if name.endswith(".toml") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"preset file not found: {path}")
        return path
    if preset_dir is None:
        raise ConfigError(
            f"unknown preset {name!r}: this program has no preset directory; "
            "pass a path to a .toml file"
        )
    path = Path(preset_dir) / f"{name}.toml"
    if not path.is_file():
        available = ", ".join(_available_presets(preset_dir)) or "(none)"
        raise ConfigError(
            f"unknown preset {name!r}; available presets in {preset_dir}: {available}"
        )
    return path


def _resolve(
    config_cls: type[T],
    argv: list[str],
    preset_dir: Path | None,
    default_preset: str | None,
    description: str,
) -> T:
    """parse_config without the exit: raises ConfigError on any problem."""
    leaves = list(_leaves(config_cls))
    requested = _preset_arg(argv)
    preset_path: Path | None = None
    if requested is not None:
        preset_path = _find_preset(requested, preset_dir)
    elif default_preset and preset_dir is not None:
        candidate = Path(preset_dir) / f"{default_preset}.toml"
        preset_path = candidate if candidate.is_file() else None
    preset = load_preset(config_cls, preset_path) if preset_path is not None else {}
    preset_name = None
    if preset_path is not None:
        preset_name = requested if requested is not None else default_preset
    parser = _build_parser(
        config_cls,
        leaves,
        preset_dir=preset_dir,
        preset_name=preset_name,
        preset=preset,
        description=description,
    )
    known = {s for action in parser._actions for s in action.option_strings}
    namespace, extra = parser.parse_known_args(_normalize_argv(argv, known))
    if extra:
        token = extra[0]
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            flags = sorted(s for s in known if s.startswith("--"))
            raise ConfigError(f"unknown flag {name}{_suggest(name, flags)}")
        raise ConfigError(f"unexpected argument {token!r} (every option is a --flag)")
    given = vars(namespace)
    given.pop("preset", None)
    by_path = {leaf.path: leaf for leaf in leaves}
    flat = dict(preset)
    for path, raw in given.items():
        leaf = by_path[path]
        try:
            flat[path] = _convert(raw, leaf.tp, text=True)
        except _Mismatch:
            shown = ",".join(raw) if isinstance(raw, list) else raw
            raise ConfigError(
                f"argument {_flag(path)}: invalid value {shown!r} for field {path!r} "
                f"(expected {_type_name(leaf.tp)})"
            ) from None
    source = "command line" if preset_path is None else f"command line + preset {preset_path}"
    return _construct(config_cls, flat, source)


def parse_config(
    config_cls: type[T],
    argv: list[str] | None = None,
    *,
    preset_dir: Path | None = None,
    default_preset: str | None = "default",
    description: str = "",
    exit_on_error: bool = True,
) -> T:
    """Build ``config_cls`` from defaults < preset < ``argv`` flags (``sys.argv[1:]`` if None).

    ``--preset NAME`` picks ``preset_dir/NAME.toml`` (or a path to a .toml file); without
    it ``preset_dir/<default_preset>.toml`` applies when present. Errors print as argparse
    errors and exit with status 2, or raise ConfigError when ``exit_on_error`` is False.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    preset_dir = Path(preset_dir) if preset_dir is not None else None
    try:
        return _resolve(config_cls, args, preset_dir, default_preset, description)
    except ConfigError as exc:
        if not exit_on_error:
            raise
        parser = _build_parser(
            config_cls,
            list(_leaves(config_cls)),
            preset_dir=preset_dir,
            preset_name=None,
            preset={},
            description=description,
        )
        parser.raise_errors = False
        parser.error(str(exc))
