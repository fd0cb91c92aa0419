"""YAML threshold file -> frozen, validated configuration.

Every problem in a file is collected into one :class:`ConfigError` that names
each offending key by its dotted path, so an operator fixes a file in one go.
Validation happens when the config is built, never inside a job.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from storewarden.tags import check_pin_glob

try:  # PyYAML's C loader is several times faster; fall back only where libyaml is absent.
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - every wheel on PyPI ships libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

KINDS: tuple[Literal["models", "bentos"], ...] = ("models", "bentos")
MAX_CONFIG_BYTES = 1024 * 1024

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
# Beyond this a size or duration is a typo, not a setting (an exabyte; a century).
_MAX_SIZE = 1000**6
_MAX_DURATION = 100 * 365 * 86400


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists each as 'at PATH: message'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


def parse_size(value: object) -> int:
    """Given ``10GiB``, ``500MB``, ``1.5G`` or an int of bytes, return bytes; raise ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 10GiB or 500MB, not a boolean")
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        match = _SIZE_PATTERN.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ValueError(f"expected a size like 10GiB or 500MB, got {value!r}")
        number = float(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"expected a size like 10GiB or 500MB, got {type(value).__name__}")
    if math.isnan(number):
        raise ValueError("expected a size like 10GiB or 500MB, got nan")
    if number < 0:
        raise ValueError("a size cannot be negative")
    if number > _MAX_SIZE:
        raise ValueError(f"size {value!r} is absurdly large")
    return int(number)


def human_bytes(count: float) -> str:
    """Given bytes, return them in binary units for people, e.g. ``1.5 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def parse_duration(value: object) -> float:
    """Given ``90s``, ``10m``, ``1h``, ``30d`` or a number of seconds, return seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 10m, 1h or 30d, not a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _DURATION_PATTERN.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _DURATION_UNITS:
            raise ValueError(f"expected a duration like 90s, 10m, 1h or 30d, got {value!r}")
        number = float(match.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ValueError(
            f"expected a duration like 90s, 10m, 1h or 30d, got {type(value).__name__}"
        )
    if math.isnan(number):  # NaN would make every `age < limit` comparison false
        raise ValueError("expected a duration like 90s, 10m, 1h or 30d, got nan")
    if number < 0:
        raise ValueError("a duration cannot be negative")
    if number > _MAX_DURATION:
        raise ValueError(f"duration {value!r} is absurdly long")
    return number


# json_schema_input_type: the schema must accept '20GiB' and '1h', as the loader does.
Size = Annotated[int, BeforeValidator(parse_size, json_schema_input_type=int | str)]
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
Percent = Annotated[float, Field(ge=0, le=100)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class TriggerConfig(_Frozen):
    """When to prune (any trigger) and when to stop (every target)."""

    high_percent: Percent = 85.0
    low_percent: Percent = 75.0
    min_free: Size | None = None
    max_store_size: Size | None = None

    @model_validator(mode="after")
    def _low_below_high(self) -> TriggerConfig:
        if self.low_percent >= self.high_percent:
            raise ValueError(
                f"low_percent ({self.low_percent:g}) must be below high_percent "
                f"({self.high_percent:g})"
            )
        return self


def _check_pin(pattern: object) -> str:
    if not isinstance(pattern, str):
        # `- iris: v1` (a YAML mapping) must not become the never-matching pin "{'iris': 'v1'}".
        raise ValueError(
            f"pin must be a string like 'name:version' or 'name:*', got {type(pattern).__name__}"
        )
    kind, slash, glob = pattern.rpartition("/")
    if slash and kind not in ("models", "bentos"):
        raise ValueError(f"pin {pattern!r}: only models/ or bentos/ may come before the tag")
    check_pin_glob(glob)
    return pattern


Pin = Annotated[str, BeforeValidator(_check_pin)]


class ProtectConfig(_Frozen):
    """What is never removed automatically."""

    keep_latest: bool = True
    keep_last: Count = 1
    min_age: Duration = 3600.0
    settle: Duration = 600.0
    abandoned_after: Duration = 86400.0
    pins: tuple[Pin, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    in_use: bool = True
    bento_references: bool = True


class RetentionConfig(_Frozen):
    """Opt-in removal even without disk pressure."""

    max_versions: Count | None = None
    max_age: Duration | None = None


class Rule(_Frozen):
    """Per-name overrides; the first rule whose ``match`` fits a name wins."""

    match: str
    kind: Literal["models", "bentos"] | None = None
    keep_latest: bool | None = None
    keep_last: Count | None = None
    min_age: Duration | None = None
    settle: Duration | None = None
    abandoned_after: Duration | None = None
    max_versions: Count | None = None
    max_age: Duration | None = None

    def matches(self, kind: str, name: str) -> bool:
        """Return whether this rule applies to versions of ``kind``/``name``."""
        return (self.kind is None or self.kind == kind) and fnmatch.fnmatchcase(name, self.match)


class ScheduleConfig(_Frozen):
    """How often the daemon checks usage and rescans the store."""

    check_interval: Annotated[Duration, Field(ge=1)] = 60.0
    reconcile_interval: Annotated[Duration, Field(ge=10)] = 900.0
    observer: Literal["auto", "inotify", "polling"] = "auto"
    # How often polling looks at the kinds, names, pointers and settling versions.
    poll_interval: Annotated[Duration, Field(ge=0.1, le=3600)] = 2.0
    debounce: Annotated[Duration, Field(le=60)] = 1.0


class LogConfig(_Frozen):
    """Audit log output: JSON lines (default) or console text, optionally also a file."""

    format: Literal["json", "console"] = "json"
    file: Path | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsConfig(_Frozen):
    """Prometheus metrics of the daemon: an HTTP endpoint, a textfile, both or neither."""

    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    address: str = "127.0.0.1"
    textfile: Path | None = None

    @field_validator("address")
    @classmethod
    def _address_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be an IP address or host name to listen on, not empty")
        return value

    @field_validator("textfile", mode="before")
    @classmethod
    def _textfile_is_prom(cls, value: object) -> object:
        # node_exporter's textfile collector reads only *.prom: any other name is never scraped.
        if isinstance(value, str | Path) and not str(value).strip().endswith(".prom"):
            raise ValueError("must be a file name ending in .prom (node_exporter reads only those)")
        return value


class ArchiveConfig(_Frozen):
    """Archive before delete (opt-in): where, how large the directory may grow, which format."""

    dir: Path | None = None
    max_size: Size | None = None
    format: Literal["tar", "gz", "xz"] = "tar"

    @field_validator("dir", mode="before")
    @classmethod
    def _dir_absolute(cls, value: object) -> object:
        # A relative directory would follow the working directory ("/" under systemd).
        if isinstance(value, str | Path) and not Path(value).expanduser().is_absolute():
            raise ValueError("must be an absolute directory path")
        return Path(value).expanduser() if isinstance(value, str | Path) else value


class AlertConfig(_Frozen):
    """When the fill forecast warns (``forecast_warning``)."""

    forecast_horizon: Duration | None = 86400.0


class Config(_Frozen):
    """The whole configuration; build it with :func:`load_config` or :func:`build_config`."""

    # A lambda on purpose: pydantic passes the data to a one-argument factory.
    store: Path = Field(default_factory=lambda: default_store())  # noqa: PLW0108
    kinds: tuple[Literal["models", "bentos"], ...] = KINDS
    state_dir: Path | None = None
    dry_run: bool = False
    trigger: TriggerConfig = TriggerConfig()
    protect: ProtectConfig = ProtectConfig()
    retention: RetentionConfig = RetentionConfig()
    rules: tuple[Rule, ...] = ()
    schedule: ScheduleConfig = ScheduleConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    archive: ArchiveConfig = ArchiveConfig()
    alert: AlertConfig = AlertConfig()

    # A field validator, not a model one: it runs, and is reported at 'kinds',
    # even when other keys of the file are wrong.
    @field_validator("kinds")
    @classmethod
    def _kinds_unique(
        cls, kinds: tuple[Literal["models", "bentos"], ...]
    ) -> tuple[Literal["models", "bentos"], ...]:
        if not kinds:
            raise ValueError("kinds must name at least one of: models, bentos")
        if len(set(kinds)) != len(kinds):
            raise ValueError("kinds lists a kind twice")
        return kinds

    @field_validator("store", "state_dir", mode="before")
    @classmethod
    def _path_not_empty(cls, value: object) -> object:
        # Path("") is the current directory: a store there is a typo, never intended.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a directory path, not empty")
        return value

    @property
    def state_path(self) -> Path:
        """The warden's own directory: lock, trash, caches (default ``<store>/.storewarden``)."""
        return self.state_dir if self.state_dir is not None else self.store / ".storewarden"

    def rule_for(self, kind: str, name: str) -> Rule | None:
        """Return the first rule that matches ``kind``/``name``, or None."""
        for rule in self.rules:
            if rule.matches(kind, name):
                return rule
        return None


def default_store(environ: Mapping[str, str] | None = None) -> Path:
    """Return ``$BENTOML_HOME`` or ``~/bentoml``, as BentoML itself resolves its home."""
    environ = os.environ if environ is None else environ
    home = environ.get("BENTOML_HOME")
    return Path(home).expanduser() if home else Path("~/bentoml").expanduser()


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part.startswith(("function-", "constrained-")) or part in {"int", "float"}:
            continue  # pydantic's names for validator steps, not keys the user wrote
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "(top level)"


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"at '{_location(item['loc'])}': {message}")
    return sorted(set(problems))


def build_config(data: object, source: str = "(embedded defaults)") -> Config:
    """Given parsed YAML (a mapping or None), return a Config.

    Raise ConfigError listing every problem with its path.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, [f"at '(top level)': expected a mapping, got {type(data).__name__}"]
        )
    try:
        config = Config.model_validate(dict(data))
    except ValidationError as error:
        raise ConfigError(source, _problems(error)) from None
    config = config.model_copy(update={"store": config.store.expanduser()})
    if config.archive.dir is not None:
        # Symlinks are resolved again when the warden starts (archive.check_archive_dir).
        archive_dir = Path(os.path.abspath(config.archive.dir))
        for kind in KINDS:
            kind_dir = Path(os.path.abspath(config.store / kind))
            if archive_dir == kind_dir or kind_dir in archive_dir.parents:
                raise ConfigError(
                    source,
                    [f"at 'archive.dir': {archive_dir} is inside {kind_dir}; BentoML would break"],
                )
    return config


def override(config: Config, source: str, **sections: Mapping[str, object]) -> Config:
    """Return ``config`` with keys of its sections replaced (``trigger={"high_percent": 70}``).

    The result is validated as a file is, cross-field checks included; raise
    ConfigError listing every problem (``source`` names where they came from).
    """
    data = config.model_dump()
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, _problems(error)) from None


def load_config(path: Path | None, *, store: Path | None = None) -> Config:
    """Given a YAML file (None for the embedded defaults), return a Config.

    ``store`` (the ``--store`` option) overrides the file's ``store``. Raise
    ConfigError for a missing, unreadable, binary, oversized or invalid file.
    """
    data: object = {}
    source = "(embedded defaults)"
    if path is not None:
        source = str(path)
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(
                source, [f"cannot read the file: {error.strerror or error}"]
            ) from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(source, [f"file is larger than {MAX_CONFIG_BYTES} bytes"])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(source, ["file is not UTF-8 text"]) from None
        if "\x00" in text:
            raise ConfigError(source, ["file is binary (contains NUL bytes)"])
        try:
            data = yaml.load(text, Loader=SafeLoader)
        except (yaml.YAMLError, ValueError) as error:
            # ValueError: a scalar Python cannot build (2026-13-45, a 5000-digit integer).
            raise ConfigError(source, [f"not valid YAML: {error}"]) from None
    if store is not None:
        if not isinstance(data, Mapping):
            data = data or {}
        if isinstance(data, Mapping):
            data = {**data, "store": str(store)}
    return build_config(data, source)


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the configuration file."""
    return Config.model_json_schema(mode="validation")
