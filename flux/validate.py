"""Check manifests against the real schemas before anything reaches a cluster.

Nothing here talks to an API server, so "valid" means what ``kubectl apply --validate=strict``
would accept as to shape: Flux kinds against the ``openAPIV3Schema`` of the CRD version they name
(from ``<reference>/flux/crds/``), core kinds against kubernetes-validate's strict schemas for a
pinned Kubernetes version. Both treat unknown fields as errors, as the API server's strict field
validation does.

CRD schemas are OpenAPI v3 with Kubernetes extensions; :func:`crd_schema_to_jsonschema` turns one
into JSON Schema: objects without ``additionalProperties`` and without
``x-kubernetes-preserve-unknown-fields`` get ``additionalProperties: false``,
``x-kubernetes-int-or-string`` and ``nullable`` become type unions, ``metadata`` gets an
ObjectMeta schema with name checks, and ``x-kubernetes-validations`` rules are evaluated by a
small CEL subset (``has()``, ``!``, ``&&``, ``||``, ``==``, ``!=``, ``self.a.b``, literals). A rule
outside that subset is skipped, not failed.

Traefik's Middleware (rendered for apps behind Traefik) has no CRD in the reference folder; it is
checked against the part of Traefik's CRD that :mod:`flux.traefik_schema` holds, the same way.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from flux.traefik_schema import MIDDLEWARE_OPENAPI

KUBERNETES_VERSION = "1.33"  # oldest release Flux 2.9 supports; kubernetes-validate ships it
REFERENCE_ENV = "NAKAMA_REFERENCE_DIR"
KUSTOMIZE_CONFIG_API = "kustomize.config.k8s.io/v1beta1"
TRAEFIK_MIDDLEWARE = ("traefik.io/v1alpha1", "Middleware")
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_LABEL},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE},
        },
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "generateName": {"type": "string"},
    },
}
# kustomize's config has no published schema; these are the fields Nakama or deploy/ may use.
_KUSTOMIZE_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": KUSTOMIZE_CONFIG_API},
        "kind": {"const": "Kustomization"},
        "metadata": {"type": "object"},
        "resources": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "components": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "namespace": {"type": "string", "pattern": _DNS_LABEL},
        "namePrefix": {"type": "string"},
        "nameSuffix": {"type": "string"},
        "labels": {"type": "array", "items": {"type": "object"}},
        "commonAnnotations": _STRING_MAP,
        "patches": {"type": "array", "items": {"type": "object"}},
        "images": {"type": "array", "items": {"type": "object"}},
    },
}


def default_reference_dir() -> Path:
    """``$NAKAMA_REFERENCE_DIR``, else ``<repository>/../shared/reference``."""
    configured = os.environ.get(REFERENCE_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


def validate_documents(
    docs: Iterable[dict[str, Any]],
    *,
    reference_dir: Path | None = None,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> list[str]:
    """Problems found in ``docs``, one line each (``Kind/name: path: message``); empty = valid."""
    crds = load_crd_schemas((reference_dir or default_reference_dir()) / "flux" / "crds")
    problems: list[str] = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            problems.append(f"document {index}: not a Kubernetes object (no apiVersion/kind)")
            continue
        meta = doc.get("metadata")
        label = f"{doc['kind']}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"
        key = (str(doc["apiVersion"]), str(doc["kind"]))
        if key == (KUSTOMIZE_CONFIG_API, "Kustomization"):
            problems += _schema_problems(label, _KUSTOMIZE_CONFIG, doc)
        elif key == TRAEFIK_MIDDLEWARE:
            problems += _schema_problems(label, _traefik_middleware(), doc)
        elif key in crds:
            problems += _schema_problems(label, crds[key], doc)
        elif key[0].split("/")[0].endswith(".fluxcd.io"):
            problems.append(f"{label}: {key[0]} is not served by the reference CRDs")
        else:
            problems += _core_problems(label, doc, kubernetes_version)
            problems += _schema_problems(label, _core_names(doc["kind"]), doc)
    return problems


def validate_file(
    path: Path,
    *,
    reference_dir: Path | None = None,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> list[str]:
    """:func:`validate_documents` for every document of a YAML file (empty documents skipped)."""
    try:
        docs = [d for d in YAML(typ="safe", pure=True).load_all(Path(path).read_text()) if d]
    except (OSError, YAMLError) as exc:
        return [f"{path}: cannot read: {' '.join(str(exc).split())[:300]}"]
    found = validate_documents(
        docs, reference_dir=reference_dir, kubernetes_version=kubernetes_version
    )
    return [f"{path}: {problem}" for problem in found]


@functools.lru_cache(maxsize=8)
def load_crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> JSON Schema, for every served version of every CRD in the
    folder (not its sub-folders: ``legacy-v1beta2/`` is for old clusters only)."""
    if not crd_dir.is_dir():
        raise FileNotFoundError(f"no CRD folder at {crd_dir}; set {REFERENCE_ENV}")
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in YAML(typ="safe", pure=True).load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    api = f"{spec['group']}/{version['name']}"
                    openapi = version["schema"]["openAPIV3Schema"]
                    schemas[(api, spec["names"]["kind"])] = crd_schema_to_jsonschema(openapi)
    return schemas


@functools.cache
def _traefik_middleware() -> dict[str, Any]:
    return crd_schema_to_jsonschema(MIDDLEWARE_OPENAPI)


def crd_schema_to_jsonschema(schema: dict[str, Any], *, top: bool = True) -> dict[str, Any]:
    """One CRD ``openAPIV3Schema`` (or a part of it) as JSON Schema with Kubernetes semantics."""
    out = {k: v for k, v in schema.items() if k not in ("description", "format", "default")}
    if "properties" in out:
        out["properties"] = {
            name: _OBJECT_META
            if top and name == "metadata"
            else crd_schema_to_jsonschema(sub, top=False)
            for name, sub in out["properties"].items()
        }
    if isinstance(out.get("items"), dict):
        out["items"] = crd_schema_to_jsonschema(out["items"], top=False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = crd_schema_to_jsonschema(
            out["additionalProperties"], top=False
        )
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [crd_schema_to_jsonschema(s, top=False) for s in out[key]]
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if top:
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind", "metadata"})
    return out


def _schema_problems(label: str, schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    errors = _Validator(schema).iter_errors(doc)
    return [
        f"{label}: {_path(e.absolute_path)}: {e.message}"
        for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])
    ]


def _core_names(kind: str) -> dict[str, Any]:
    """kubernetes-validate checks shape only; the API server also checks names (a Service's is a
    DNS-1035 label: no leading digit)."""
    dns_1035 = {"type": "string", "maxLength": 63, "pattern": _DNS_1035}
    name = dns_1035 if kind == "Service" else _OBJECT_META["properties"]["name"]
    namespace = _OBJECT_META["properties"]["namespace"]
    return {"properties": {"metadata": {"properties": {"name": name, "namespace": namespace}}}}


def _core_problems(label: str, doc: dict[str, Any], version: str) -> list[str]:
    """kubernetes-validate stops at the first error; one per document is enough to act on."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{label}: {_path(exc.path)}: {exc.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kv_utils.VersionNotSupportedError) as exc:
        return [f"{label}: {exc.message}"]
    return []


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(document)"


def _cel_rules(validator: Any, rules: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not isinstance(instance, dict):
        return
    for rule in rules:
        try:
            ok = _Cel(rule["rule"]).evaluate(instance)
        except _Unsupported:
            continue
        if ok is not True:
            yield jsonschema.ValidationError(rule.get("message") or f"failed rule {rule['rule']}")


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"x-kubernetes-validations": _cel_rules}
)


class _Unsupported(Exception):
    """A CEL expression outside the subset this module evaluates."""


class _Missing:
    """An absent field: any comparison with it is an error in CEL, so the rule does not hold."""


class _Cel:
    """Recursive descent over the CEL subset Flux's CRDs use; ``self`` is the object validated."""

    _TOKEN = re.compile(r"\s*(\|\||&&|==|!=|!|\(|\)|\.|'[^']*'|\"[^\"]*\"|[A-Za-z_]\w*|-?\d+)")

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            match = self._TOKEN.match(text, pos)
            if not match:
                raise _Unsupported(text)
            self.tokens.append(match.group(1))
            pos = match.end()
        self.pos = 0

    def evaluate(self, this: dict[str, Any]) -> Any:
        self.this = this
        value = self._or()
        if self.pos != len(self.tokens):
            raise _Unsupported(" ".join(self.tokens))
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        lexeme = self._peek()
        if lexeme is None or (expected is not None and lexeme != expected):
            raise _Unsupported(f"expected {expected!r} at {lexeme!r}")
        self.pos += 1
        return lexeme

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            value = value is True or right is True
        return value

    def _and(self) -> Any:
        value = self._unary()
        while self._peek() == "&&":
            self._take()
            right = self._unary()
            value = value is True and right is True
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return self._unary() is not True
        left = self._primary()
        if self._peek() in ("==", "!="):
            op, right = self._take(), self._primary()
            if isinstance(left, _Missing) or isinstance(right, _Missing):
                return False
            return (left == right) == (op == "==")
        return left

    def _primary(self) -> Any:
        lexeme = self._take()
        if lexeme == "(":
            value = self._or()
            self._take(")")
            return value
        if lexeme == "has":
            self._take("(")
            value = self._select(self._take())
            self._take(")")
            return not isinstance(value, _Missing)
        if lexeme[0] in "'\"":
            return lexeme[1:-1]
        if lexeme in ("true", "false"):
            return lexeme == "true"
        if lexeme.lstrip("-").isdigit():
            return int(lexeme)
        return self._select(lexeme)

    def _select(self, first: str) -> Any:
        if first != "self":
            raise _Unsupported(first)
        value: Any = self.this
        while self._peek() == ".":
            self._take()
            name = self._take()
            value = value.get(name, _Missing()) if isinstance(value, dict) else _Missing()
        return value
