"""One config mechanism for every recipe section: typed dataclasses built from YAML mappings.

A section subclasses `Config` (a dataclass) and may override `validate()`. Then

    Recipe.from_dict(mapping)            # recurses into nested sections; checks keys, types and values
    Recipe.load("recipe.yaml", ["--curriculum.pacing", "sqrt"])   # a YAML file plus dotted overrides
    recipe.to_dict()                     # back to plain data (what `cogfm_recipe.yaml` in a checkpoint holds)

Every mistake raises a `RecipeError` that names the file, the section and the field, before any work starts:
`recipe.yaml: curriculum.pacing: must be one of (...), got 'fast'`. Built directly in Python
(`LossConfig(unlikelihood=-1)`), a section validates too, and names itself by its `section`.

Types are checked against the dataclass annotations: `bool`, `int`, `float` (finite; an int, or a string YAML did
not read as a number such as `5e-4`, is accepted), `str`, `Literal[...]`, `X | None`, `list[X]`, `tuple[X, ...]`,
`dict[str, X]` and nested `Config` sections; annotations outside this set (`dict`, `Any`) accept any value.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

ConfigT = TypeVar("ConfigT", bound="Config")

# Set while `from_dict` constructs a section: it validates the object itself afterwards, naming the section by where
# it sits in the recipe rather than by the class's default `section`.
_VALIDATING_IN_FROM_DICT = contextvars.ContextVar("validating_in_from_dict", default=False)


class RecipeError(ValueError):
    """A recipe mistake, reported before any work starts. `where` is the path to the field (`curriculum.c0`,
    `sources[0] (corpus).path`), prefixed by the file when the recipe came from one."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(f"{where}: {message}" if where else message)
        self.message, self.where = message, where

    def within(self, prefix: str) -> RecipeError:
        """The same error, one level further out: `prefix` is the path of the section that holds the field."""
        if not prefix:
            return self
        return RecipeError(self.message, f"{prefix}.{self.where}" if self.where else prefix)

    def in_file(self, path: str | Path) -> RecipeError:
        return RecipeError(self.message, f"{path}: {self.where}" if self.where else str(path))


@dataclasses.dataclass
class Config:
    """Base of every recipe section (see the module docstring)."""

    # The name a section has in a recipe, used in errors when it is built directly rather than from a recipe.
    section: ClassVar[str] = ""

    def __post_init__(self):
        if not _VALIDATING_IN_FROM_DICT.get():
            try:
                self.validate()
            except RecipeError as error:
                raise error.within(self.section) from None

    def validate(self) -> None:
        """Check values that types alone cannot (ranges, choices, paths); raise `self.invalid(field, why)`."""

    @staticmethod
    def invalid(field: str, message: str) -> RecipeError:
        return RecipeError(message, field)

    @classmethod
    def from_dict(cls: type[ConfigT], values: Any, where: str = "") -> ConfigT:
        """Build from a mapping (a parsed YAML section), checking every key, type and value; errors name `where`."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise RecipeError(f"expected a mapping of fields, got {type(values).__name__} {values!r}", where)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise RecipeError(
                f"unknown field(s) {unknown} (an unknown key is a typo or a field of another section); "
                f"known: {sorted(fields)}",
                where,
            )
        required = [
            n
            for n, f in fields.items()
            if dataclasses.MISSING is f.default and dataclasses.MISSING is f.default_factory
        ]
        missing = [name for name in required if name not in values]
        if missing:
            raise RecipeError(f"missing required field(s) {missing}", where)
        hints = _type_hints(cls)
        converted = {name: convert(value, hints[name], _join(where, name)) for name, value in values.items()}
        token = _VALIDATING_IN_FROM_DICT.set(True)
        try:
            config = cls(**converted)
        finally:
            _VALIDATING_IN_FROM_DICT.reset(token)
        try:
            config.validate()
        except RecipeError as error:
            raise error.within(where) from None
        return config

    @classmethod
    def load(cls: type[ConfigT], path: str | Path, overrides: list[str] | None = None) -> ConfigT:
        """A YAML file, then `--dotted.field value` overrides; errors name the file."""
        values = read_yaml(path)
        try:
            if isinstance(values, dict):
                values = apply_overrides(values, parse_overrides(overrides or []), cls.override_key)
            return cls.from_dict(values)
        except RecipeError as error:
            raise error.in_file(path) from None

    @classmethod
    def override_key(cls, key: str) -> str:
        """The dotted path a command-line `--key` sets (a recipe may accept short forms, as `--max_steps`)."""
        return key

    def to_dict(self) -> dict:
        """Plain data (lists, not tuples), which `yaml.safe_dump` writes and `from_dict` reads back."""
        return _plain(self)


def read_yaml(path: str | Path) -> Any:
    """A recipe file's parsed content ({} for an empty file); a missing file or bad YAML is a RecipeError."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"not valid YAML: {error}", str(path)) from None


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """["--max_steps", "50", "--curriculum.pacing=sqrt"] -> [("max_steps", 50), ("curriculum.pacing", "sqrt")].
    Values are parsed as YAML (`--bf16 true`, `--c0 0.2`, `--tasks [a, b]`)."""
    pairs, index = [], 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--"):
            raise RecipeError(f"expected --field value, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            index += 1
        else:
            if index + 1 >= len(args):
                raise RecipeError(f"--{key} needs a value")
            value = args[index + 1]
            index += 2
        pairs.append((key.replace("-", "_"), yaml.safe_load(value)))  # --pacing-fraction = --pacing_fraction
    return pairs


def apply_overrides(values: dict, overrides: list[tuple[str, Any]], resolve=lambda key: key) -> dict:
    """A copy of `values` with each dotted key set (intermediate mappings created); `from_dict` then checks
    that every key names a field."""
    values = _copy(values)
    for key, value in overrides:
        *sections, name = resolve(key).split(".")
        target = values
        for part in sections:
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--{key}: {part!r} is not a section (its value is {child!r})")
            target = child
        target[name] = value
    return values


def convert(value: Any, annotation: Any, where: str) -> Any:
    """`value` checked against (and where lossless, converted to) the type `annotation`; errors name `where`."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        members = [a for a in arguments if a is not type(None)]
        if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], Config):
            return convert(value, members[0], where)  # `Section | None`: the section's own error names its field
        for member in members:
            try:
                return convert(value, member, where)
            except RecipeError:
                continue
        raise RecipeError(f"expected {_describe(annotation)}, got {_show(value)}", where)
    if origin is Literal:
        if value not in arguments:
            raise RecipeError(f"must be one of {list(arguments)}, got {value!r}", where)
        return value
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return value if isinstance(value, annotation) else annotation.from_dict(value, where)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"expected {_describe(annotation)}, got {_show(value)}", where)
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            if len(value) != len(arguments):
                raise RecipeError(f"expected {len(arguments)} values, got {len(value)}: {value!r}", where)
            return tuple(convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, arguments)))
        member = arguments[0] if arguments else Any
        items = [convert(v, member, _item_where(where, i, v)) for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise RecipeError(f"expected a mapping, got {_show(value)}", where)
        member = arguments[1] if arguments else Any
        return {key: convert(v, member, _join(where, str(key))) for key, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"expected true or false, got {_show(value)}", where)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"expected an integer, got {_show(value)}", where)
        return value
    if annotation is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise RecipeError(f"expected a finite number, got {_show(value)}", where)
        return float(number)
    if annotation is str:
        if not isinstance(value, str):
            raise RecipeError(f"expected a string, got {_show(value)}", where)
        return value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            raise RecipeError(f"must be one of {[m.value for m in annotation]}, got {value!r}", where) from None
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise RecipeError(f"expected {annotation.__name__}, got {_show(value)}", where)
    return value


@functools.cache
def _type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _item_where(where: str, index: int, value: Any) -> str:
    # List items that carry a name (data sources) are named by it too: `sources[2] (reasoning)`.
    name = value.get("name") if isinstance(value, Mapping) else None
    return f"{where}[{index}]" + (f" ({name})" if isinstance(name, str) else "")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _describe(annotation: Any) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in arguments)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_describe(a) for a in arguments if a is not Ellipsis)}]"
    return getattr(annotation, "__name__", str(annotation))


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
