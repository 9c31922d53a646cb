"""What python-gitlab sends to GitLab's trigger API when Nakama triggers a pipeline
(backend/cluster/pipelines.py calls ``project.trigger_pipeline(ref, token, variables=...)``).

python-gitlab 6.1 added ``inputs`` to ``trigger_pipeline`` and sends ``"inputs": {}`` whenever
none are given (its commit 306c4b19). GitLab's ``POST /projects/:id/trigger/pipeline`` declares
only ``ref``, ``token`` and ``variables`` before 18.1 (lib/api/ci/triggers.rb; Grape passes the
rest on and Ci::PipelineTriggerService never reads it), and takes ``inputs`` as pipeline inputs
from 18.1, where an empty map sets none. This test pins the request down against a loopback
server, so that a python-gitlab that sends something else (inputs that are not empty, a form
body, the token in a header) shows up here first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gitlab
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support import serve


@pytest.fixture
def captured() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def trigger(request: Request) -> JSONResponse:
        seen.append(
            {
                "path": request.url.path,
                "content_type": request.headers.get("content-type", ""),
                "private_token": request.headers.get("private-token"),
                "body": json.loads(await request.body()),
            }
        )
        return JSONResponse({"id": 7, "status": "created", "ref": "main"}, status_code=201)

    app = Starlette(
        routes=[Route("/api/v4/projects/{id:path}/trigger/pipeline", trigger, methods=["POST"])]
    )
    with serve(app) as url:
        yield url, seen


def test_python_gitlab_sends_ref_token_variables_and_empty_inputs(
    captured: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = captured
    api = gitlab.Gitlab(url, private_token="group-token-not-for-triggers")
    project = api.projects.get("nakama/pipelines", lazy=True)
    variables = {"NAKAMA_KIND": "build", "NAKAMA_PROJECT": "demo"}
    created = project.trigger_pipeline("main", "glptt-trigger", variables=variables)
    assert created.id == 7
    [request] = seen
    assert request["path"] == "/api/v4/projects/nakama/pipelines/trigger/pipeline"
    assert request["content_type"].startswith("application/json")
    assert request["body"] == {
        "ref": "main",
        "token": "glptt-trigger",
        "variables": variables,
        "inputs": {},
    }
    # The client's API token goes along in its header, as on every python-gitlab request; the
    # trigger API authenticates by the trigger token alone.
    assert request["private_token"] == "group-token-not-for-triggers"
    # Every value is a string, as the endpoint demands ("variables needs to be a map of
    # key-valued strings").
    assert all(isinstance(v, str) for v in request["body"]["variables"].values())
