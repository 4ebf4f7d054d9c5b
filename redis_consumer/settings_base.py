"""The machinery behind `settings.py`: one `Setting` declares a variable once.

A `Setting` is a typed descriptor. Declared in a class body it gives attribute access with the
right type for editors (`settings.QUEUE` is a `str`); the same object parses and validates the
environment value (a `ConfigError` naming the variable), renders its README row and is what a
plug-in consumer lists in its `settings_spec` to get its own validated settings. Nothing here
knows any variable; `settings.py` declares them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, overload

from .errors import ConfigError

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}
_KINDS = {str: "str", int: "int", float: "float", bool: "bool", tuple: "list", list: "list"}


class Setting(Generic[T]):
    """One environment variable: its name, type, default, meaning and checks.

    `aliases` are older (kiosk) names still read when `name` is unset; `choices` restricts a
    string; `minimum` bounds a number; `check(value)` may return an error text (e.g. "a file
    that exists"); `secret` masks the value in `config` and keeps it out of logs.
    """

    def __init__(
        self,
        name: str,
        type: type[T],
        default: T,
        help: str = "",
        *,
        minimum: float | None = None,
        choices: Iterable[str] = (),
        secret: bool = False,
        aliases: Iterable[str] = (),
        check: Callable[[T], str | None] | None = None,
    ) -> None:
        if type not in _KINDS:
            raise TypeError(f"setting {name}: type must be one of str, int, float, bool, tuple")
        self.name = name
        self.type = type
        self.default = default
        self.help = help
        self.minimum = minimum
        self.choices = tuple(choices)
        self.secret = secret
        self.aliases = tuple(aliases)
        self.check = check

    @property
    def kind(self) -> str:
        """str | int | float | bool | choice | list (as shown in docs and used to parse)."""
        return "choice" if self.choices else _KINDS[self.type]

    # -- descriptor: typed attribute access on a Settings object ------------------------------
    def __set_name__(self, owner: type, attr: str) -> None:
        if getattr(owner, "_declares_settings", False) and attr != self.name:
            raise TypeError(f"{owner.__name__}.{attr} declares the variable {self.name}: use the same name")

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return obj._values[self.name]

    def of(self, settings: Any) -> T:
        """This setting's value in `settings` (typed; how a plug-in reads its own settings)."""
        try:
            return settings._values[self.name]
        except KeyError:
            raise ConfigError(
                f"{self.name} was not read: build the settings with Settings.for_consumer(...)"
            ) from None

    # -- reading ----------------------------------------------------------------------------
    def read(self, environ: Mapping[str, str]) -> T:
        """The value from `environ` (the name, else its first alias set), else the default."""
        for var in (self.name, *self.aliases):
            if var in environ:
                return self.parse(environ[var], var)
        return self.default

    def parse(self, raw: str, var: str | None = None) -> T:
        """Parse one raw value; `ConfigError` names the variable (`var`: the alias used)."""
        label = self.name if var in (None, self.name) else f"{var} (old name of {self.name})"
        value = self._convert(str(raw).strip(), label)
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{label} must be {problem}, got {_shown(raw)}")
        return value

    def _convert(self, raw: str, label: str) -> Any:
        kind = self.kind
        if kind == "str":
            return raw
        if kind == "list":
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if kind == "bool":
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ConfigError(f"{label} must be true or false, got {_shown(raw)}")
        if kind == "choice":
            for choice in self.choices:
                if raw.lower() == choice.lower():
                    return choice
            raise ConfigError(f"{label} must be one of {', '.join(self.choices)}, got {_shown(raw)}")
        caster: Callable[[str], Any] = int if kind == "int" else float
        try:
            value = caster(raw)
        except ValueError:
            what = "a whole number" if kind == "int" else "a number"
            raise ConfigError(f"{label} must be {what}, got {_shown(raw)}") from None
        if kind == "float" and math.isnan(value):
            raise ConfigError(f"{label} must be a number, got {_shown(raw)}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{label} must be at least {self.minimum:g}, got {_shown(raw)}")
        return value

    # -- documentation ------------------------------------------------------------------------
    def row(self) -> str:
        """This setting's row in a README configuration table."""
        default = ",".join(self.default) if isinstance(self.default, tuple) else self.default
        if self.kind == "bool":
            default = str(default).lower()
        shown = f"`{default}`" if default != "" else "(empty)"
        text = self.help
        if self.choices:
            text += f" One of {', '.join(f'`{c}`' for c in self.choices)}."
        if self.aliases:
            text += f" Old name{'s' if len(self.aliases) > 1 else ''} still read: " + ", ".join(
                f"`{a}`" for a in self.aliases) + "."
        return f"| `{self.name}` | {shown} | {text} |"

    def __repr__(self) -> str:
        return f"Setting({self.name!r}, {self.type.__name__}, {self.default!r})"


def _shown(raw: str) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "...'"


def markdown_table(specs: Iterable[Setting]) -> str:
    """A README configuration table for `specs`."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows.extend(s.row() for s in specs)
    return "\n".join(rows)


def specs_of(declared: Any) -> tuple[Setting, ...]:
    """The settings a class declares as attributes, or a plain sequence of them, in order."""
    if declared is None:
        return ()
    if isinstance(declared, type):
        found: dict[str, Setting] = {}
        for klass in reversed(declared.__mro__):
            for value in vars(klass).values():
                if isinstance(value, Setting):
                    found[value.name] = value
        return tuple(found.values())
    specs = tuple(declared)
    for s in specs:
        if not isinstance(s, Setting):
            raise TypeError(f"settings_spec must hold Setting objects, got {s!r}")
    return specs


class SettingsBase:
    """Immutable values of a class's `Setting`s (plus any plug-in settings added later)."""

    __slots__ = ("_environ", "_extra_specs", "_values")
    _declares_settings = True  # attribute name == variable name, checked by Setting.__set_name__

    def __init__(self, values: dict[str, Any], extra_specs: tuple[Setting, ...] = (),
                 environ: Mapping[str, str] | None = None) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_extra_specs", extra_specs)
        object.__setattr__(self, "_environ", environ)

    @classmethod
    def specs(cls) -> tuple[Setting, ...]:
        """Every setting the class declares, in declaration order."""
        return specs_of(cls)

    @classmethod
    def read_values(cls, environ: Mapping[str, str] | None, specs: Iterable[Setting],
                    overrides: dict[str, Any]) -> dict[str, Any]:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in specs:
            values[s.name] = overrides.pop(s.name) if s.name in overrides else s.read(env)
        return values

    def __getattr__(self, name: str) -> Any:  # only called for names that are not declared
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]  # a plug-in's own setting
        raise AttributeError(f"no setting named {name}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only; use replace()")

    def __reduce__(self) -> tuple:  # picklable (e.g. for a multiprocessing child), environment not kept
        return (type(self), (self._values, self._extra_specs, None))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values == self._values  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._values)} values)"

    def all_specs(self) -> tuple[Setting, ...]:
        """The class's settings followed by the plug-in settings read for this process."""
        return self.specs() + self._extra_specs
