"""Finding tags inside text, as BentoML would read them."""

from __future__ import annotations

import pytest

from storewarden.tags import find_tags


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("iris:v1", ["iris:v1"]),
        ("RESNET:V1", ["resnet:v1"]),
        ("model(iris:v1)", ["iris:v1"]),
        ("--model=iris:v1,resnet:v2", ["iris:v1", "resnet:v2"]),
        ("registry:iris:v1", ["registry:iris", "iris:v1"]),
        ("see iris:v1.", ["iris:v1"]),
        ("-iris:_v1_", ["iris:v1"]),
        ("host:8080", ["host:8080"]),
        ("iris::v1", []),
        ("iris:", []),
        ("/srv/bentoml/models/iris/v1", []),
        (f"{'a' * 64}:v1", []),
    ],
)
def test_every_tag_inside_text_is_found_lower_cased(text: str, tags: list[str]) -> None:
    assert list(find_tags(text)) == tags
