"""Configuration: size and duration syntax, defaults, every error in one report, files.

Files under tmp_path stand in for the operator's YAML; the sample config in
config/storewarden.yaml is held to documenting every option of the model.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from storewarden.config import (
    MAX_CONFIG_BYTES,
    Config,
    ConfigError,
    build_config,
    default_store,
    human_bytes,
    json_schema,
    load_config,
    parse_duration,
    parse_size,
)

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "storewarden.yaml"


def problems_of(data: object) -> list[str]:
    """Return the problems build_config reports for ``data``; fail if it accepts it."""
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    return caught.value.problems


def path_of(problem: str) -> str:
    """Return the dotted path a problem names ("at 'PATH': message")."""
    match = re.match(r"at '([^']*)': ", problem)
    assert match is not None, problem
    return match.group(1)


def write(tmp_path: Path, content: str | bytes) -> Path:
    """Write a config file under tmp_path and return its path."""
    path = tmp_path / "storewarden.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GiB", 10 * 1024**3),
        ("500MB", 500 * 1000**2),
        ("1.5G", 1_500_000_000),
        ("20 kib", 20 * 1024),
        ("  7 b ", 7),
        ("2TB", 2 * 1000**4),
        ("1tib", 1024**4),
        ("3k", 3000),
        ("1024", 1024),
        ("0", 0),
        (4096, 4096),
        (1.9, 1),
    ],
)
def test_parse_size_reads_decimal_and_binary_units(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "not a boolean"),
        (False, "not a boolean"),
        (-1, "cannot be negative"),
        (-0.5, "cannot be negative"),
        ("-1GB", "expected a size"),
        ("10 XB", "expected a size"),
        ("10PB", "expected a size"),
        ("GiB", "expected a size"),
        ("", "expected a size"),
        ("ten gigabytes", "expected a size"),
        ("1e3", "expected a size"),
        (None, "expected a size"),
        ([10], "expected a size"),
        (10**19, "absurdly large"),
        ("5000000TB", "absurdly large"),
        (math.inf, "size"),
        (math.nan, "size"),
    ],
)
def test_parse_size_rejects_what_is_not_a_size(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(value)


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("30d", 30 * 86400.0),
        ("2w", 14 * 86400.0),
        (" 5 M ", 300.0),
        ("45", 45.0),
        (45, 45.0),
        (2.5, 2.5),
        ("0", 0.0),
    ],
)
def test_parse_duration_reads_seconds_minutes_hours_days_weeks(
    text: object, expected: float
) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "not a boolean"),
        (-1, "cannot be negative"),
        ("-5m", "expected a duration"),
        ("5 minutes", "expected a duration"),
        ("3y", "expected a duration"),
        ("1h30m", "expected a duration"),
        (None, "expected a duration"),
        ({"hours": 1}, "expected a duration"),
        ("40000d", "absurdly long"),
        (10**12, "absurdly long"),
        (math.inf, "duration"),
        (math.nan, "duration"),
    ],
)
def test_parse_duration_rejects_what_is_not_a_duration(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


def test_sizes_and_durations_in_the_config_accept_the_same_syntax() -> None:
    config = build_config(
        {
            "trigger": {"min_free": "20GiB", "max_store_size": "1.5TB"},
            "protect": {"min_age": "2h", "settle": 90, "abandoned_after": "2d"},
            "retention": {"max_age": "4w"},
            "schedule": {"check_interval": "30s", "reconcile_interval": "1h", "debounce": 0.5},
        }
    )

    assert config.trigger.min_free == 20 * 1024**3
    assert config.trigger.max_store_size == 1_500_000_000_000
    assert (config.protect.min_age, config.protect.settle) == (7200.0, 90.0)
    assert config.protect.abandoned_after == 2 * 86400.0
    assert config.retention.max_age == 28 * 86400.0
    assert config.schedule.check_interval == 30.0
    assert config.schedule.reconcile_interval == 3600.0
    assert config.schedule.debounce == 0.5


def test_a_nan_duration_is_rejected_rather_than_switching_a_protection_off() -> None:
    # YAML's .nan would make every `age < min_age` comparison false.
    problems = problems_of({"protect": {"min_age": math.nan}})

    assert len(problems) == 1
    assert problems[0].startswith("at 'protect.min_age': ")


# -- defaults -------------------------------------------------------------------------------


def test_the_embedded_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTOML_HOME", "/data/bentoml")

    config = load_config(None)

    assert config.store == Path("/data/bentoml")
    assert config.kinds == ("models", "bentos")
    assert config.state_dir is None
    assert config.state_path == Path("/data/bentoml/.storewarden")
    assert config.dry_run is False
    assert (config.trigger.high_percent, config.trigger.low_percent) == (85.0, 75.0)
    assert (config.trigger.min_free, config.trigger.max_store_size) == (None, None)
    protect = config.protect
    assert (protect.keep_latest, protect.keep_last, protect.in_use) == (True, 1, True)
    assert (protect.min_age, protect.settle, protect.abandoned_after) == (3600, 600, 86400)
    assert (protect.pins, protect.labels) == ((), {})
    assert (config.retention.max_versions, config.retention.max_age) == (None, None)
    assert config.rules == ()
    schedule = config.schedule
    assert (schedule.check_interval, schedule.reconcile_interval) == (60.0, 900.0)
    assert (schedule.observer, schedule.debounce) == ("auto", 1.0)
    assert (config.log.format, config.log.file, config.log.level) == ("json", None, "info")


def test_an_empty_mapping_and_none_both_give_the_defaults() -> None:
    assert build_config(None) == build_config({}) == load_config(None)


def test_the_config_is_frozen() -> None:
    config = build_config({})

    with pytest.raises(ValueError, match="frozen"):
        config.dry_run = True


def test_state_dir_moves_the_state_path() -> None:
    config = build_config({"store": "/srv/bentoml", "state_dir": "/var/lib/storewarden"})

    assert config.state_path == Path("/var/lib/storewarden")


def test_a_store_under_the_home_directory_is_expanded() -> None:
    assert build_config({"store": "~/models"}).store == Path.home() / "models"


# -- the store: $BENTOML_HOME and --store ---------------------------------------------------


def test_default_store_follows_bentoml_home() -> None:
    assert default_store({"BENTOML_HOME": "/data/bentoml"}) == Path("/data/bentoml")


@pytest.mark.parametrize("environ", [{}, {"BENTOML_HOME": ""}], ids=["unset", "empty"])
def test_default_store_falls_back_to_bentoml_in_home(environ: dict[str, str]) -> None:
    assert default_store(environ) == Path.home() / "bentoml"


def test_default_store_expands_a_tilde_in_bentoml_home() -> None:
    assert default_store({"BENTOML_HOME": "~/ml/store"}) == Path.home() / "ml" / "store"


def test_the_store_option_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "store: /from/the/file\ndry_run: true\n")

    config = load_config(path, store=Path("/from/the/option"))

    assert config.store == Path("/from/the/option")
    assert config.dry_run is True


@pytest.mark.parametrize("content", ["", "# only comments\n", "---\n"])
def test_the_store_option_applies_to_an_empty_file(tmp_path: Path, content: str) -> None:
    config = load_config(write(tmp_path, content), store=Path("/srv/bentoml"))

    assert config.store == Path("/srv/bentoml")


def test_the_store_option_applies_to_the_embedded_defaults() -> None:
    assert load_config(None, store=Path("/srv/bentoml")).store == Path("/srv/bentoml")


def test_the_store_option_does_not_hide_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- store\n- /srv\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, store=Path("/srv/bentoml"))

    assert caught.value.problems == ["at '(top level)': expected a mapping, got list"]


# -- every problem, with its path, in one error --------------------------------------------


def test_every_problem_in_a_file_is_reported_at_once_with_its_path() -> None:
    problems = problems_of(
        {
            "stroe": "/srv/bentoml",
            "kinds": [],
            "dry_run": "perhaps",
            "trigger": {"high_percent": 70, "low_percent": 80},
            "protect": {
                "keep_last": -1,
                "min_age": "an hour",
                "pins": ["iris:*", "nocolon"],
                "labels": {"stage": 1},
            },
            "retention": {"max_versions": 2.5},
            "rules": [{"match": "iris", "kind": "widgets", "keeplast": 2}, {"keep_last": 1}],
            "schedule": {"observer": "fanotify", "interval": "1m", "debounce": "2m"},
            "log": {"level": "verbose", "format": "xml"},
        }
    )

    paths = [path_of(problem) for problem in problems]
    assert sorted(paths) == sorted(
        [
            "stroe",
            "kinds",
            "dry_run",
            "trigger",
            "protect.keep_last",
            "protect.min_age",
            "protect.pins[1]",
            "protect.labels.stage",
            "retention.max_versions",
            "rules[0].kind",
            "rules[0].keeplast",
            "rules[1].match",
            "schedule.observer",
            "schedule.interval",
            "schedule.debounce",
            "log.level",
            "log.format",
        ]
    )


def test_the_error_message_names_the_source_and_lists_each_problem_on_its_own_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "trigger:\n  hihg_percent: 90\nprotect:\n  keep_last: many\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    error = caught.value
    assert error.source == str(path)
    assert error.problems[0] == "at 'protect.keep_last': Input should be a valid integer, " + (
        "unable to parse string as an integer"
    )
    assert error.problems[1] == "at 'trigger.hihg_percent': unknown key"
    assert str(error).splitlines() == [
        f"invalid configuration {path}:",
        *(f"  {problem}" for problem in error.problems),
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"trigger": {"high_percent": 80, "low_percent": 80}},
            "at 'trigger': low_percent (80) must be below high_percent (80)",
        ),
        (
            {"trigger": {"high_percent": 101}},
            "at 'trigger.high_percent': Input should be less than or equal to 100",
        ),
        (
            {"trigger": {"low_percent": -5}},
            "at 'trigger.low_percent': Input should be greater than or equal to 0",
        ),
        (
            {"protect": {"keep_last": -1}},
            "at 'protect.keep_last': Input should be greater than or equal to 0",
        ),
        (
            {"retention": {"max_versions": -3}},
            "at 'retention.max_versions': Input should be greater than or equal to 0",
        ),
        (
            {"rules": [{"match": "iris", "keep_last": -2}]},
            "at 'rules[0].keep_last': Input should be greater than or equal to 0",
        ),
        (
            {"protect": {"keep_last": 10**7}},
            "at 'protect.keep_last': Input should be less than or equal to 1000000",
        ),
        (
            {"protect": {"pins": ["iris"]}},
            "at 'protect.pins[0]': pin 'iris' must look like 'name:version' or 'name:*'"
            " (lower case letters, digits, . _ - and the globs * ? [ ])",
        ),
        (
            {"schedule": {"observer": "fanotify"}},
            "at 'schedule.observer': Input should be 'auto', 'inotify' or 'polling'",
        ),
        (
            {"schedule": {"poll_interval": "0.01s"}},
            "at 'schedule.poll_interval': Input should be greater than or equal to 0.1",
        ),
        (
            {"schedule": {"check_interval": "0s"}},
            "at 'schedule.check_interval': Input should be greater than or equal to 1",
        ),
        (
            {"schedule": {"reconcile_interval": "5s"}},
            "at 'schedule.reconcile_interval': Input should be greater than or equal to 10",
        ),
        (
            {"kinds": ["models", "models"]},
            "at 'kinds': kinds lists a kind twice",
        ),
        (
            {"kinds": ["models", "datasets"]},
            "at 'kinds[1]': Input should be 'models' or 'bentos'",
        ),
        (
            {"trigger": {"min_free": "lots"}},
            "at 'trigger.min_free': expected a size like 10GiB or 500MB, got 'lots'",
        ),
        (
            {"trigger": {"min_free": True}},
            "at 'trigger.min_free': expected a size like 10GiB or 500MB, not a boolean",
        ),
        (
            {"protect": {"settle": -60}},
            "at 'protect.settle': a duration cannot be negative",
        ),
        (
            {"trigger": "high"},
            "at 'trigger': Input should be a valid dictionary or instance of TriggerConfig",
        ),
    ],
)
def test_each_kind_of_mistake_is_named_at_its_path(data: dict[str, Any], expected: str) -> None:
    assert problems_of(data) == [expected]


def test_a_pin_written_as_a_yaml_mapping_is_rejected_not_silently_ignored(
    tmp_path: Path,
) -> None:
    # `- iris: v1` (with a space) is a mapping, not the pin 'iris:v1'.
    path = write(tmp_path, "protect:\n  pins:\n    - iris: v1\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("at 'protect.pins[0]': ")


def test_a_problem_is_reported_once_even_when_pydantic_reports_it_twice() -> None:
    problems = problems_of({"trigger": {"min_free": "lots"}, "rules": [{"match": 3}]})

    assert len(problems) == len(set(problems)) == 2


# -- files -----------------------------------------------------------------------------------


def test_a_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.source == str(path)
    assert caught.value.problems == ["cannot read the file: No such file or directory"]


def test_a_directory_given_as_the_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)

    assert caught.value.problems == ["cannot read the file: Is a directory"]


@pytest.mark.parametrize("content", ["", "\n\n", "# nothing set\n", "---\n...\n", "null\n"])
def test_an_empty_file_gives_the_defaults(tmp_path: Path, content: str) -> None:
    assert load_config(write(tmp_path, content)) == build_config({})


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"trigger:\x00\x01\x02 high_percent: 90\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == ["file is binary (contains NUL bytes)"]


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "store: /srv/modèles\n".encode("latin-1"))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == ["file is not UTF-8 text"]


def test_a_utf8_file_with_non_ascii_text_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "store: /srv/modèles\nprotect:\n  labels: {équipe: ml}\n")

    config = load_config(path)

    assert config.store == Path("/srv/modèles")
    assert config.protect.labels == {"équipe": "ml"}


def test_a_huge_file_is_refused_without_being_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [f"file is larger than {MAX_CONFIG_BYTES} bytes"]


@pytest.mark.parametrize(
    "content",
    [
        "trigger: [\n",
        "trigger:\n  high_percent: 90\n low_percent: 70\n",
        "\tstore: /srv\n",
        "key: 'unterminated\n",
        "[" * 100_000,
        "- " * 100_000 + "x\n",
    ],
    ids=["unclosed", "bad-indent", "tab", "unterminated", "deep-flow", "deep-block"],
)
def test_invalid_yaml_is_a_config_error(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, content))

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("not valid YAML: ")


@pytest.mark.parametrize(
    "content",
    ["store: 2026-13-45\n", "trigger:\n  min_free: " + "9" * 5000 + "\n"],
    ids=["impossible-date", "integer-of-5000-digits"],
)
def test_yaml_values_python_cannot_build_are_a_config_error_not_a_crash(
    tmp_path: Path, content: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, content))

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("not valid YAML: ")


@pytest.mark.parametrize(
    ("content", "type_name"),
    [("- a\n- b\n", "list"), ("42\n", "int"), ("just a sentence\n", "str")],
)
def test_a_file_that_is_not_a_mapping_is_a_config_error(
    tmp_path: Path, content: str, type_name: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, content))

    assert caught.value.problems == [f"at '(top level)': expected a mapping, got {type_name}"]


def test_an_alias_bomb_is_rejected_without_expanding_it(tmp_path: Path) -> None:
    # Ten levels of ten aliases: 10**10 pins if anything expanded or printed them.
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [
        f"x{level}: &x{level} [" + ", ".join([f"*x{level - 1}"] * 10) + "]"
        for level in range(1, 10)
    ]
    lines += ["protect:", "  pins: *x9", "  labels: *x9", "rules: *x9", "kinds: *x9"]
    path = write(tmp_path, "\n".join(lines) + "\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "at 'x0': unknown key" in caught.value.problems
    assert "at 'protect.labels': Input should be a valid dictionary" in caught.value.problems
    assert sum(problem.startswith("at 'protect.pins[") for problem in caught.value.problems) == 10


# -- the JSON schema ------------------------------------------------------------------------


def _models(model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    """Yield ``(dotted path, model)`` for the model and every model nested in its fields."""
    yield "", model
    for name, field in model.model_fields.items():
        for nested in _nested_models(field.annotation):
            for path, inner in _models(nested):
                yield (f"{name}.{path}" if path else name), inner


def _nested_models(annotation: object) -> Iterator[type[BaseModel]]:
    """Yield the pydantic models an annotation refers to (through unions, tuples, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for argument in typing.get_args(annotation):
            yield from _nested_models(argument)


def config_fields() -> list[str]:
    """Return the dotted path of every field of Config, nested models included."""
    return sorted(
        f"{path}.{name}" if path else name
        for path, model in _models(Config)
        for name in model.model_fields
    )


def test_the_model_walk_finds_nested_and_listed_models() -> None:
    # Guards the walk the documentation test relies on.
    fields = config_fields()

    assert "trigger.high_percent" in fields
    assert "rules.match" in fields
    assert "rules.max_age" in fields
    assert "log.file" in fields
    assert len(fields) >= 40


def test_the_json_schema_is_json_with_a_property_for_every_key() -> None:
    schema = json.loads(json.dumps(json_schema()))

    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(Config.model_fields)
    definitions = schema["$defs"]
    for path, model in _models(Config):
        if path:
            assert set(definitions[model.__name__]["properties"]) == set(model.model_fields)
            assert definitions[model.__name__]["additionalProperties"] is False


def _accepts_string(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(option.get("type") == "string" for option in options)


@pytest.mark.parametrize(
    ("definition", "key"),
    [
        ("TriggerConfig", "min_free"),
        ("TriggerConfig", "max_store_size"),
        ("ProtectConfig", "min_age"),
        ("ProtectConfig", "settle"),
        ("ProtectConfig", "abandoned_after"),
        ("RetentionConfig", "max_age"),
        ("Rule", "min_age"),
        ("ScheduleConfig", "check_interval"),
        ("ScheduleConfig", "debounce"),
    ],
)
def test_the_json_schema_lets_sizes_and_durations_be_written_with_units(
    definition: str, key: str
) -> None:
    # An editor validating the YAML against the schema must accept '20GiB' and '1h'.
    assert _accepts_string(json_schema()["$defs"][definition]["properties"][key])


# -- the sample configuration ---------------------------------------------------------------


def test_the_sample_config_loads_and_sets_exactly_the_defaults() -> None:
    assert load_config(SAMPLE) == build_config({})


def _section(text: str, key: str) -> str:
    """Return the part of the sample under top-level ``key`` (set or commented out)."""
    tops = "|".join(re.escape(name) for name in Config.model_fields)
    start = re.search(rf"^#? ?{re.escape(key)}:", text, re.MULTILINE)
    assert start is not None, f"top-level key {key!r} is not in {SAMPLE}"
    following = re.compile(rf"^#? ?(?!{re.escape(key)}:)(?:{tops}):", re.MULTILINE)
    end = following.search(text, start.end())
    return text[start.start() : end.start() if end else len(text)]


@pytest.mark.parametrize("field", config_fields())
def test_the_sample_config_documents_every_option(field: str) -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    top, *rest = field.split(".")
    section = _section(text, top)
    if rest:
        leaf = rest[-1]
        pattern = rf"^[ \t]*#?[ \t]*(?:- )?{re.escape(leaf)}:"
        assert re.search(pattern, section, re.MULTILINE), f"{field} is not in {SAMPLE}"


@pytest.mark.parametrize("key", ["store", "state_dir"])
def test_an_empty_store_or_state_dir_is_rejected_not_taken_as_the_current_directory(
    key: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({key: "  "})
    assert caught.value.problems == [f"at '{key}': must be a directory path, not empty"]


# -- metrics --------------------------------------------------------------------------------


def test_metrics_are_off_by_default_and_listen_on_loopback_when_on() -> None:
    metrics = build_config({}).metrics

    assert (metrics.port, metrics.address, metrics.textfile) == (None, "127.0.0.1", None)


def test_metrics_settings_are_read() -> None:
    metrics = build_config(
        {"metrics": {"port": 9840, "address": "::1", "textfile": "/var/lib/n/storewarden.prom"}}
    ).metrics

    assert (metrics.port, metrics.address) == (9840, "::1")
    assert metrics.textfile == Path("/var/lib/n/storewarden.prom")


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"port": 65536}, "at 'metrics.port': Input should be less than or equal to 65535"),
        ({"port": -1}, "at 'metrics.port': Input should be greater than or equal to 0"),
        ({"port": "http"}, "at 'metrics.port': Input should be a valid integer"),
        ({"address": " "}, "at 'metrics.address': must be an IP address or host name"),
        ({"textfile": "/var/lib/n/storewarden.txt"}, "at 'metrics.textfile': must be a file name"),
        ({"textfile": ""}, "at 'metrics.textfile': must be a file name ending in .prom"),
        ({"interval": 5}, "at 'metrics.interval': unknown key"),
    ],
)
def test_a_bad_metrics_setting_is_named_at_its_path(metrics: dict[str, Any], expected: str) -> None:
    problems = problems_of({"metrics": metrics})

    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (10 * 2**30, "10.0 GiB"),
        (3 * 2**40, "3.0 TiB"),
    ],
)
def test_sizes_are_shown_in_binary_units_and_read_back_by_parse_size(count: int, text: str) -> None:
    assert human_bytes(count) == text
    assert abs(parse_size(text.replace(" ", "")) - count) <= count * 0.05


@pytest.mark.parametrize(
    ("pin", "said"),
    [
        ("Iris:*", "BentoML lower-cases tags: write 'iris:*'"),
        ("iris:V1", "BentoML lower-cases tags: write 'iris:v1'"),
        ("iris:latest", "latest is a pointer, not a version"),
        ("things/iris:*", "only models/ or bentos/ may come before the tag"),
    ],
)
def test_a_config_pin_that_could_never_match_is_refused_with_the_fix(pin: str, said: str) -> None:
    (problem,) = problems_of({"protect": {"pins": [pin]}})

    assert problem.startswith("at 'protect.pins[0]'")
    assert said in problem


def test_config_pins_may_name_a_kind_as_storewarden_pin_records_it() -> None:
    config = build_config({"protect": {"pins": ["bentos/svc:*", "models/iris:v1", "llm*:*"]}})

    assert config.protect.pins == ("bentos/svc:*", "models/iris:v1", "llm*:*")
