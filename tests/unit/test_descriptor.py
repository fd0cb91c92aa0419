"""The fast descriptor reader agrees with PyYAML wherever it answers at all."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storewarden.descriptor import read_plain

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings chosen to hit YAML's traps: bools, numbers, dates, indicators, quotes.
TRICKY = st.sampled_from(
    [
        "true",
        "False",
        "yes",
        "no",
        "on",
        "null",
        "~",
        "1",
        "1.5",
        "0x1f",
        "1e3",
        ".inf",
        "2026-01-01",
        "12:30",
        "a: b",
        "#x",
        "it's",
        '"q"',
        "- x",
        "[a]",
        "{a: b}",
        "",
        " lead",
        "trail ",
        "a  b",
        "&anchor",
        "*alias",
        "!tag",
        "%",
        "@",
        "`",
        "ünï",
        "a\nb",
        "prod",
        "v1",
    ]
)
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.: '#\"", min_size=0, max_size=12)
SCALAR = st.one_of(TRICKY, WORD, st.integers(-5, 5), st.booleans(), st.none())
NESTED = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(WORD, inner, max_size=3)),
    max_leaves=6,
)


def full_parse(text: str) -> tuple[str | None, dict[str, str]] | None:
    """What the census takes from a descriptor when PyYAML reads it."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    labels = data.get("labels") or {}
    created = data.get("creation_time")
    return (
        created if isinstance(created, str) else None,
        {str(key): str(value) for key, value in labels.items()} if isinstance(labels, dict) else {},
    )


def descriptors() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "name": WORD,
            "labels": st.dictionaries(
                st.one_of(WORD, TRICKY), st.one_of(SCALAR, NESTED), max_size=4
            ),
            "metadata": NESTED,
            "creation_time": st.one_of(
                st.just("2026-11-26T20:40:43.987295+00:00"), WORD, TRICKY, st.none()
            ),
        },
        optional={"options": NESTED, "signatures": NESTED},
    )


@SETTINGS
@given(descriptors())
def test_on_documents_safe_dump_writes_the_fast_reader_agrees_with_pyyaml(
    document: dict[str, Any],
) -> None:
    text = yaml.safe_dump(document, sort_keys=False)
    fast = read_plain(text)
    if fast is not None:
        assert fast == full_parse(text)


@SETTINGS
@given(descriptors(), st.data())
def test_on_damaged_documents_the_fast_reader_answers_only_what_pyyaml_would(
    document: dict[str, Any], data: st.DataObject
) -> None:
    text = yaml.safe_dump(document, sort_keys=False)
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.sampled_from(["", " ", "  ", "\n", ":", "-", "'", "#", "\t", "x: y\n"]))
    damaged = text[:cut] + insert + text[cut:]
    fast = read_plain(damaged)
    if fast is not None:
        assert fast == full_parse(damaged), damaged


BENTOML_MODEL_YAML = """name: iris
version: u27g4nhj3gkawax4
module: ''
labels:
  team: a
  stage: 'true'
options: {}
metadata: {}
context:
  framework_name: ''
  framework_versions: {}
  bentoml_version: 1.4.40
  python_version: 3.11.7
signatures: {}
api_version: v1
creation_time: '2026-11-26T20:40:43.987295+00:00'
"""


def test_a_descriptor_as_bentoml_writes_it_takes_the_fast_path() -> None:
    assert read_plain(BENTOML_MODEL_YAML) == (
        "2026-11-26T20:40:43.987295+00:00",
        {"team": "a", "stage": "true"},
    )


@pytest.mark.parametrize(
    "text",
    [
        "labels:\n  team: true\n",  # a bool PyYAML would turn into 'True'
        "labels:\n  1.5: x\n",  # a float key
        "labels:\n  a:\n    b: c\n",  # nested labels
        "labels:\n  a: b\n   c: d\n",  # inconsistent indentation
        "labels: {a: b}\n",  # a flow mapping
        "creation_time: 2026-11-26 20:40:43\n",  # unquoted: a YAML timestamp
        'creation_time: "2026-11-26"\n',  # double quotes
        "labels:\n  a: b # comment\n",
        "labels:\n- a\n",
        "name: a\r\nlabels: {}\r\n",
        "\ufeffname: a\n",
        "creation_time: '2026-11-2",  # truncated mid-string
        "labels:\n  a: b\nlabels:\n  a: c\n",  # a repeated key
    ],
)
def test_anything_outside_the_plain_subset_is_left_to_pyyaml(text: str) -> None:
    assert read_plain(text) is None
