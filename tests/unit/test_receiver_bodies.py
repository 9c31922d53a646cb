"""The receiver's cheap looks at raw bodies: nesting depth and the project a body names."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_reference
from webhook_receiver.bodies import Rejection, find_project, json_depth, parse_object


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),
        (b"[[1, 2], {}]", 2),
        (b"[[1, {}], {}]", 3),
        (b'{"a": "[[[[", "b": ["\\"[[[", "\\\\"], "c": {"d": []}}', 3),
        (b'["\\\\\\"[[[["]', 1),
        (json.dumps(load_reference("push_hook.json")).encode(), 4),
    ],
)
def test_depth_ignores_brackets_inside_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth
    json.loads(text)


@pytest.mark.parametrize(
    ("text", "project"),
    [
        (json.dumps(load_reference("push_hook.json")).encode(), "diaspora"),
        (json.dumps(load_reference("pipeline_hook.json")).encode(), "gitlab-test"),
        (b'{"project" : { "path_with_namespace" :"Group/Sub/My-App"}}', "my-app"),
        (b'{"project": {"path_with_namespace": "local/a\\u0062"}}', None),
        (b'{"project": {"name": "x"}}', None),
    ],
)
def test_the_project_is_found_without_parsing(text: bytes, project: str | None) -> None:
    assert find_project(text) == project


def test_parse_refuses_depth_past_the_limit_and_accepts_it_at_the_limit() -> None:
    at_limit = b'{"a": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert json_depth(at_limit) == 32
    assert list(parse_object(at_limit, max_depth=32)) == ["a"]
    with pytest.raises(Rejection) as refused:
        parse_object(b"[" + at_limit + b"]", max_depth=32)
    assert refused.value.status == 400
