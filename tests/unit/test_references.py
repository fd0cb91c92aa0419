"""Reading which models a bento needs from its bento.yaml, hostile files included."""

from __future__ import annotations

import pytest
import yaml

from storewarden.references import MAX_PROBLEMS, bento_references, normalize_tag
from storewarden.store import parse_descriptor

# What `bentoml build` (BentoML 1.4.40) wrote for a service with one BentoModel,
# trimmed of its image and schema sections.
BUILT = """service: service:Svc
name: svc
version: 7tnnk2xlykxmwax4
bentoml_version: 1.4.40
creation_time: '2026-11-29T07:03:38.926251+00:00'
labels: {}
models: []
entry_service: Svc
services:
- name: Svc
  service: ''
  models:
  - tag: iris:7px6d2xlykvwsax4
    module: ''
    creation_time: '2026-11-29T07:03:30.818966+00:00'
  dependencies: []
  config: {}
envs: []
"""


def references(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the references and problems parse_descriptor finds in a bento.yaml text."""
    descriptor = parse_descriptor(text.encode())
    assert descriptor.problem is None
    return descriptor.references, descriptor.reference_problems


def test_a_bento_built_by_bentoml_needs_the_model_its_service_names() -> None:
    assert references(BUILT) == (("iris:7px6d2xlykvwsax4",), ())


def test_the_top_level_list_and_every_service_count_each_tag_once() -> None:
    text = """name: svc
models:
- tag: iris:v1
- tag: mnist:v2
services:
- name: A
  models:
  - tag: iris:v1
  - tag: llm:v3
- name: B
  models:
  - tag: mnist:v2
  - tag: bert:v4
"""
    assert references(text) == (("iris:v1", "mnist:v2", "llm:v3", "bert:v4"), ())


def test_entries_of_any_registry_count_as_bentomls_own_delete_does() -> None:
    # `bentoml models delete` compares tags only; an entry of another registry
    # protects a store model only if it carries the same tag.
    text = """models:
- tag: iris:v1
  registry: bentoml
- tag: iris:v2
  registry: huggingface
- tag: iris:v3
"""
    assert references(text) == (("iris:v1", "iris:v2", "iris:v3"), ())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("iris:v1", "iris:v1"),
        ("Iris:V1", "iris:v1"),  # BentoML lower-cases tags
        ("iris", "iris:latest"),  # no version: whatever latest names when loaded
        ("iris:", "iris:latest"),
        ("iris:latest", "iris:latest"),
        (" iris:v1 ", "iris:v1"),
    ],
)
def test_tags_are_read_as_bentoml_resolves_them(value: str, expected: str) -> None:
    assert normalize_tag(value) == (expected, None)


@pytest.mark.parametrize(
    "value",
    [123, 1.5, None, True, ["iris:v1"], {"tag": "iris:v1"}, "../etc:v1", "iris:v/1", "x" * 500],
)
def test_a_value_that_names_no_valid_tag_is_a_problem_not_a_reference(value: object) -> None:
    tag, problem = normalize_tag(value)

    assert tag is None
    assert problem


def test_invalid_entries_are_reported_and_skipped_while_valid_ones_still_count() -> None:
    data = {
        "models": [{"tag": 7}, {"no_tag": "x"}, "iris:v1", {"tag": "Bad Tag:v"}],
        "services": [{"models": "not a list"}, "not a mapping", {"models": [{"tag": "llm:v2"}]}],
    }

    found, problems = bento_references(data)

    assert found == ("iris:v1", "llm:v2")
    assert len(problems) == 4
    assert any("services[0].models is not a list" in problem for problem in problems)
    assert any("is not text" in problem for problem in problems)


def test_a_huge_list_of_bad_entries_yields_a_bounded_problem_list() -> None:
    found, problems = bento_references({"models": [{"tag": index} for index in range(100_000)]})

    assert found == ()
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == f"and {100_000 - MAX_PROBLEMS} more problems"


def test_a_huge_list_of_valid_tags_is_read_whole() -> None:
    tags = [f"m{index}:v{index}" for index in range(50_000)]

    found, problems = bento_references({"models": [{"tag": tag} for tag in tags]})

    assert found == tuple(tags)
    assert problems == ()


def test_an_alias_bomb_is_read_once_per_object_not_once_per_expansion() -> None:
    # 100,000 services that are one aliased mapping, whose models list is one list
    # of 100,000 aliases: visited naively, 10^10 entries (hours); once each, 10^5.
    count = 100_000
    text = (
        "entry: &entry {tag: 'iris:v1'}\n"
        "list: &list\n" + "- *entry\n" * count + "service: &service {name: s, models: *list}\n"
        "services:\n" + "- *service\n" * count
    )
    data = yaml.load(text, Loader=yaml.CSafeLoader)

    found, problems = bento_references(data)

    assert found == ("iris:v1",)
    assert problems == ()


def test_deep_nesting_makes_the_descriptor_unparseable_not_the_census_crash() -> None:
    text = "name: svc\nmodels: " + "[" * 20_000 + "]" * 20_000 + "\n"

    descriptor = parse_descriptor(text.encode())

    assert descriptor.problem == "descriptor is not valid YAML"
    assert descriptor.references == ()


def test_a_bento_yaml_without_lists_needs_nothing() -> None:
    # The fast reader takes it (no sequence at all), and BentoML would list no model.
    assert references("name: svc\nversion: v1\nmodels: []\nlabels: {}\n") == ((), ())
