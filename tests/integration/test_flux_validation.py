"""Rendered manifests against the real schemas (Flux CRDs from ../shared/reference, Kubernetes
via kubernetes-validate), each validator caught failing on purpose, and the ``nakama flux`` CLI.

The rendered manifests are read from the golden files, which tests/unit/test_flux_manifests.py
keeps equal to what flux.manifests renders."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from flux.cli import render_main, validate_main
from flux.validate import (
    crd_schema_to_jsonschema,
    default_reference_dir,
    load_crd_schemas,
    validate_documents,
    validate_file,
)

CRDS = default_reference_dir() / "flux" / "crds"
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "flux"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
SHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"


def golden_files(case: str) -> list[Path]:
    return sorted(GOLDEN.joinpath(case).rglob("*.yaml"))


def docs(case: str = "demo") -> list[dict[str, Any]]:
    """The case's API objects (the kustomize config is not one)."""
    loaded = [YAML(typ="safe", pure=True).load(p.read_text()) for p in golden_files(case)]
    return [d for d in loaded if d["apiVersion"] != "kustomize.config.k8s.io/v1beta1"]


def one(kind: str, case: str = "demo") -> dict[str, Any]:
    return copy.deepcopy(next(d for d in docs(case) if d["kind"] == kind))


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 2


APP_KINDS = {
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "NetworkPolicy",
    "Ingress",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "Kustomization",
}
GATEWAY_CASE = "nakama-gateway"  # the apps' shared ExternalName Service, not an app


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_object_is_valid(case: str) -> None:
    rendered = docs(case)
    kinds = {d["kind"] for d in rendered}
    if case == GATEWAY_CASE:
        assert kinds == {"Service"}
    else:  # a Traefik app guarded by forward-auth has its Middleware, an autoscaled app its HPA
        assert APP_KINDS <= kinds <= APP_KINDS | {"Middleware", "HorizontalPodAutoscaler"}
    assert sorted(d["kind"] for d in rendered).count("Ingress") in (0, 2)
    assert validate_documents(rendered) == []


def test_the_golden_cases_cover_each_controller_and_visibility() -> None:
    ingresses = [d for case in CASES for d in docs(case) if d["kind"] == "Ingress"]
    keys = {k for d in ingresses for k in d["metadata"].get("annotations", {})}
    assert "nginx.ingress.kubernetes.io/auth-url" in keys
    assert "traefik.ingress.kubernetes.io/router.middlewares" in keys
    assert "cert-manager.io/cluster-issuer" in keys
    guards = (
        "nginx.ingress.kubernetes.io/auth-url",
        "traefik.ingress.kubernetes.io/router.middlewares",
    )
    unguarded = {
        d["metadata"]["name"]
        for d in ingresses
        if not set(guards) & set(d["metadata"].get("annotations", {}))
    }
    assert "open-data" in unguarded  # the public app
    assert {"demo", "sales-dashboard", "team-wiki"}.isdisjoint(unguarded)
    assert any(d["kind"] == "Middleware" for case in CASES for d in docs(case))
    assert any(d["kind"] == "HorizontalPodAutoscaler" for case in CASES for d in docs(case))


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_file_is_valid_as_written(case: str) -> None:
    for path in golden_files(case):
        assert validate_file(path) == [], path


def test_reference_crds_serve_v1_for_every_flux_kind() -> None:
    schemas = load_crd_schemas(CRDS)
    for api, kind in [
        ("image.toolkit.fluxcd.io/v1", "ImageRepository"),
        ("image.toolkit.fluxcd.io/v1", "ImagePolicy"),
        ("image.toolkit.fluxcd.io/v1", "ImageUpdateAutomation"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ]:
        assert (api, kind) in schemas


def test_the_crd_files_themselves_are_valid_crds() -> None:
    for path in sorted(CRDS.glob("*.yaml")):
        assert validate_file(path) == [], path.name


def _mutate(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("kind", "path", "value", "expected"),
    [
        ("ImagePolicy", "spec.bogus", 1, "'bogus' was unexpected"),
        ("ImagePolicy", "spec.policy.numerical.order", "newest", "is not one of"),
        ("ImagePolicy", "spec.interval", "5m", "only accepted when spec.digestReflectionPolicy"),
        ("ImageRepository", "spec.interval", 60, "is not of type 'string'"),
        ("ImageRepository", "spec.interval", "1 minute", "does not match"),
        ("ImageRepository", "spec.secretRef", {"name": "x", "key": "y"}, "'key' was unexpected"),
        ("ImageUpdateAutomation", "spec.update.strategy", "Rewrite", "is not one of"),
        ("ImageUpdateAutomation", "spec.git.commit.author", {"name": "x"}, "'email' is a required"),
        ("Kustomization", "spec.prune", "yes", "is not of type 'boolean'"),
        ("Kustomization", "metadata.name", "Demo_App", "does not match"),
        ("Kustomization", "metadata.owner", "me", "'owner' was unexpected"),
    ],
)
def test_crd_validation_reports_wrong_fields_and_types(
    kind: str, path: str, value: Any, expected: str
) -> None:
    problems = validate_documents([_mutate(one(kind), path, value)])
    assert problems, f"{kind} {path}={value!r} passed"
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(f"{kind}/") for p in problems)


def test_crd_validation_reports_missing_required_fields() -> None:
    doc = one("ImageRepository")
    del doc["spec"]["image"]
    assert any("'image' is a required property" in p for p in validate_documents([doc]))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.forwardAuth.trustForwardHeader", "no", "is not of type 'boolean'"),
        ("spec.forwardAuth.authResponseHeaders", "X-Forwarded-User", "is not of type 'array'"),
        ("spec.forwardAuth.adress", "http://x", "'adress' was unexpected"),
        ("spec.basicAuth", {"secret": "s"}, "'basicAuth' was unexpected"),  # not in the subset
        ("metadata.name", "Team_Wiki", "does not match"),
        ("spec.forwardAuth.tls", {"insecureSkipVerify": "yes"}, "is not of type 'boolean'"),
    ],
)
def test_middleware_validation_reports_wrong_fields_and_types(
    path: str, value: Any, expected: str
) -> None:
    problems = validate_documents([_mutate(one("Middleware", "team-wiki"), path, value)])
    assert any(expected in p for p in problems), problems


def test_middleware_validation_needs_the_address() -> None:
    doc = one("Middleware", "team-wiki")
    del doc["spec"]["forwardAuth"]["address"]
    assert any("'address' is a required" in p for p in validate_documents([doc]))


def test_a_flux_version_the_crds_do_not_serve_is_reported() -> None:
    doc = one("ImagePolicy")
    doc["apiVersion"] = "image.toolkit.fluxcd.io/v1beta2"  # removed in Flux 2.9
    (problem,) = validate_documents([doc])
    assert "not served by the reference CRDs" in problem


@pytest.mark.parametrize(
    ("kind", "path", "value", "expected"),
    [
        ("Deployment", "spec.replicas", "one", "is not of type"),
        ("Deployment", "spec.template.spec.containers.0.imagePulPolicy", "Always", "unexpected"),
        ("Deployment", "spec.strategy.type", 3, "is not of type"),
        ("Service", "spec.ports.0.port", "eighty", "is not of type"),
        ("Service", "metadata.name", "2048-game", "does not match"),
        ("PersistentVolumeClaim", "spec.accessModes", "ReadWriteOnce", "is not of type"),
        ("Ingress", "spec.rules.0.host", ["a"], "is not of type"),
        ("Ingress", "spec.backend", {}, "'backend' was unexpected"),
    ],
)
def test_core_validation_reports_wrong_fields_and_types(
    kind: str, path: str, value: Any, expected: str
) -> None:
    problems = validate_documents([_mutate(one(kind), path, value)])
    assert any(expected in p for p in problems), problems


def test_unknown_core_kind_and_non_objects_are_reported() -> None:
    odd = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    problems = validate_documents([odd, {"just": "data"}])
    assert len(problems) == 2
    assert "Widget" in problems[0] and "apiVersion/kind" in problems[1]


def test_kustomize_config_is_checked() -> None:
    bad = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": "deployment.yaml",
        "bases": ["../x"],
    }
    problems = validate_documents([bad])
    assert any("'bases' was unexpected" in p for p in problems)
    assert any("is not of type 'array'" in p for p in problems)


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, {"a": "x"}, {"b": 1}),
        (
            {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            {"anything": [1]},
            "not an object",
        ),
        ({"x-kubernetes-int-or-string": True}, 8080, 1.5),
        ({"x-kubernetes-int-or-string": True}, "http", None),
        ({"type": "string", "nullable": True}, None, 3),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            {"k": 1},
            {"k": "v"},
        ),
    ],
)
def test_schema_conversion_follows_kubernetes(schema: dict[str, Any], good: Any, bad: Any) -> None:
    converted = crd_schema_to_jsonschema(schema, top=False)
    jsonschema.validate(good, converted)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, converted)


def test_reference_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(CRDS, tmp_path / "flux" / "crds", ignore=shutil.ignore_patterns("legacy-*"))
    monkeypatch.setenv("NAKAMA_REFERENCE_DIR", str(tmp_path))
    assert default_reference_dir() == tmp_path
    assert validate_documents(docs()) == []
    monkeypatch.setenv("NAKAMA_REFERENCE_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="NAKAMA_REFERENCE_DIR"):
        validate_documents(docs())


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Render with the default settings whatever the developer's shell exports."""
    for key in list(os.environ):
        if key.startswith("NAKAMA_") and key != "NAKAMA_REFERENCE_DIR":
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("clean_env")
def test_render_writes_the_files_and_they_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = render_main(["--project", "demo", "--out", str(tmp_path), "--commit", SHA, "--validate"])
    assert code == 0
    written = capsys.readouterr().out.split()
    golden = Path(__file__).resolve().parent.parent / "golden" / "flux" / "demo"
    expected = sorted(p.relative_to(golden).as_posix() for p in golden.rglob("*.yaml"))
    assert written == expected
    for relative in written:  # the default settings render the golden "demo" case
        assert (tmp_path / relative).read_text() == (golden / relative).read_text()
    assert validate_main([str(tmp_path)]) == 0


@pytest.mark.usefixtures("clean_env")
def test_render_writes_the_gateway_service_and_it_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert render_main(["--gateway", "--out", str(tmp_path), "--validate"]) == 0
    (written,) = capsys.readouterr().out.split()
    golden = GOLDEN / GATEWAY_CASE
    assert written == "clusters/nakama/apps/nakama-gateway.yaml"
    assert (tmp_path / written).read_text() == (golden / written).read_text()
    both = tmp_path / "both"
    assert render_main(["--project", "demo", "--gateway", "--out", str(both)]) == 0
    assert (both / written).is_file() and (both / "apps" / "demo" / "ingress.yaml").is_file()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("visibility", "controller", "guarded"),
    [("public", "nginx", False), ("internal", "nginx", True), ("private", "traefik", True)],
)
def test_render_takes_the_visibility_and_the_controller(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    visibility: str,
    controller: str,
    guarded: bool,
) -> None:
    monkeypatch.setenv("NAKAMA_FLUX__INGRESS_CONTROLLER", controller)
    args = ["--project", "demo", "--visibility", visibility, "--out", str(tmp_path), "--validate"]
    assert render_main(args) == 0
    ingress = YAML(typ="safe", pure=True).load(
        (tmp_path / "apps" / "demo" / "ingress.yaml").read_text()
    )
    assert bool(ingress["metadata"].get("annotations")) is guarded
    middleware = tmp_path / "apps" / "demo" / "middleware.yaml"
    assert middleware.exists() is (guarded and controller == "traefik")


def test_the_default_internal_url_is_the_service_deploy_makes() -> None:
    """FluxSettings' default reaches the Service of deploy/kustomize/base."""
    deploy = Path(__file__).resolve().parent.parent.parent / "deploy" / "kustomize" / "base"
    service = YAML(typ="safe", pure=True).load((deploy / "service.yaml").read_text())
    gateway = one("Service", GATEWAY_CASE)
    meta = service["metadata"]
    assert (
        gateway["spec"]["externalName"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    )
    assert [p["port"] for p in gateway["spec"]["ports"]] == [
        p["port"] for p in service["spec"]["ports"]
    ]


@pytest.mark.usefixtures("clean_env")
def test_render_takes_branch_tag_and_namespace(tmp_path: Path) -> None:
    args = [
        "--project",
        "demo",
        "--out",
        str(tmp_path),
        "--branch",
        "develop",
        "--tag",
        "develop-da156088-20261122040506",
        "--namespace",
        "team-a",
    ]
    assert render_main(args) == 0
    deployment = (tmp_path / "apps" / "demo" / "deployment.yaml").read_text()
    assert ':develop-da156088-20261122040506 # {"$imagepolicy": "team-a:demo"}' in deployment
    assert "^develop-" in (tmp_path / "apps" / "demo" / "imagepolicy.yaml").read_text()


@pytest.mark.usefixtures("clean_env")
def test_render_takes_the_limits(tmp_path: Path) -> None:
    args = ["--project", "demo", "--out", str(tmp_path), "--validate"]
    limits = ["--memory-mib", "2048", "--cpu", "0.5", "--disk-mib", "512", "--replicas", "2"]
    assert render_main([*args, *limits, "--autoscale-max", "5"]) == 0
    folder = tmp_path / "apps" / "demo"
    deployment = YAML(typ="safe").load((folder / "deployment.yaml").read_text())
    assert "replicas" not in deployment["spec"]
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    assert app["resources"]["limits"] == {"cpu": "500m", "memory": "2Gi"}
    hpa = YAML(typ="safe").load((folder / "horizontalpodautoscaler.yaml").read_text())
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    claim = YAML(typ="safe").load((folder / "persistentvolumeclaim-data.yaml").read_text())
    assert claim["spec"]["resources"]["requests"]["storage"] == "512Mi"


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "demo", "--replicas", "3", "--autoscale-max", "2"], "autoscale_max"),
        (["--project", "demo", "--memory-mib", "1"], "memory_mib"),
        (["--project", "Sales"], "upper-case"),
        (["--project", "1st"], "must start with a letter"),
        (["--project", "demo", "--commit", "abc"], "full lower-case hash"),
        (["--project", "demo", "--tag", "no good"], "image tag"),
    ],
)
def test_render_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert render_main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nakama flux render: error:") and message in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("clean_env")
def test_render_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert render_main(["--out", "x"]) == 2
    assert "--project" in capsys.readouterr().err
    assert render_main(["--project", "demo", "--out", "x", "--visibility", "secret"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_render_reports_a_write_failure_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")
    assert render_main(["--project", "demo", "--out", str(blocker), "--commit", SHA]) == 1
    assert capsys.readouterr().err.startswith("nakama flux render: error:")


def test_validate_reports_problems_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: image.toolkit.fluxcd.io/v1\nkind: ImageRepository\n"
        "metadata: {name: x}\nspec: {image: r/x, interval: soon}\n"
    )
    (tmp_path / "broken.yml").write_text("a: [unclosed\n")
    assert validate_main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad.yaml: ImageRepository/x: spec.interval" in out
    assert "broken.yml: cannot read" in out


def test_validate_missing_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_main([str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_render_without_commit_warns_that_the_init_container_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review D15: without --commit the Deployment's init container has nothing to sync
    (``${NAKAMA_INITIAL_COMMIT:?...}`` with no annotation), so every pod fails to start."""
    assert render_main(["--project", "demo", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "warning: no --commit" in err and "fail to start" in err
    assert render_main(["--project", "demo", "--out", str(tmp_path / "b"), "--commit", SHA]) == 0
    assert "warning" not in capsys.readouterr().err
    assert render_main(["--gateway", "--out", str(tmp_path / "c")]) == 0  # no app, no pods
    assert "warning" not in capsys.readouterr().err


def test_flux_render_and_validate_help_show_their_options() -> None:
    from typer.testing import CliRunner

    from nakama_cli.main import app

    runner = CliRunner()
    shown = runner.invoke(app, ["flux", "render", "--help"])
    assert shown.exit_code == 0
    for option in ("--project", "--commit", "--tag", "--out", "--validate", "--memory-mib"):
        assert option in shown.output, option
    shown = runner.invoke(app, ["flux", "validate", "--help"])
    assert shown.exit_code == 0 and "--reference-dir" in shown.output
