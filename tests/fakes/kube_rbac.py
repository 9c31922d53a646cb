"""Verb-level RBAC for the Kubernetes fake, from the real Role and RoleBinding YAML in deploy/.

The API server authorises every request by its attributes (user, verb, API group, resource,
subresource, namespace, name) against the rules of the Roles and ClusterRoles bound to the user,
and refuses what no rule allows with a ``Forbidden`` Status. This module does the same for the
fake, with the rules read from the manifests an operator applies, so a call of Nakama's that
the Role does not grant fails in tests as it would on a cluster (review K6: the fake used to
authorise by namespace only, so a token without Secret rights could create a Secret).

The message and ``details`` follow the API server's ``NewForbidden`` (k8s.io/apimachinery
``errors.go``) and the RBAC authorizer's reason, e.g.::

    pods "demo-1" is forbidden: User "system:serviceaccount:nakama:nakama" cannot get
    resource "pods/log" in API group "" in the namespace "nakama-apps"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parents[2]
# The RBAC an install applies: the backend's Role, and the optional reloader pipeline's.
DEPLOY_RBAC = (
    REPO_ROOT / "deploy" / "kustomize" / "base" / "rbac.yaml",
    REPO_ROOT / "deploy" / "reloader-pipeline" / "rbac.yaml",
)
_RBAC_API = "rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class Rule:
    api_groups: frozenset[str]
    resources: frozenset[str]  # "pods", "pods/log", "*"
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    def allows(self, attrs: Attributes) -> bool:
        resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        return (
            bool({"*", attrs.verb} & self.verbs)
            and bool({"*", attrs.group} & self.api_groups)
            and bool({"*", resource} & self.resources)
            and (not self.resource_names or attrs.name in self.resource_names)
        )


@dataclass(frozen=True)
class Attributes:
    """What the authorizer looks at in one request."""

    user: str
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str  # "" for the core group
    resource: str
    subresource: str
    namespace: str | None  # None: cluster-scoped
    name: str | None

    def forbidden(self) -> tuple[str, dict[str, Any]]:
        """The Status ``message`` and ``details`` the API server answers a refusal with."""
        qualified = self.resource + (f".{self.group}" if self.group else "")
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        reason = (
            f'User "{self.user}" cannot {self.verb} resource "{resource}" '
            f'in API group "{self.group}" {where}'
        )
        subject = f'{qualified} "{self.name}"' if self.name else qualified
        details: dict[str, Any] = {"kind": self.resource}
        if self.group:
            details["group"] = self.group
        if self.name:
            details["name"] = self.name
        return f"{subject} is forbidden: {reason}", details


def request_attributes(
    user: str, method: str, path: str, query: Mapping[str, str]
) -> Attributes | None:
    """The attributes of a request to a resource path; None for other paths (discovery)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    resource, name, subresource = rest[0], (rest[1] if len(rest) > 1 else None), ""
    if len(rest) > 2:
        subresource = rest[2]
    verb = {
        "GET": "get" if name else ("watch" if query.get("watch") in ("1", "true") else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method.upper(), method.lower())
    return Attributes(user, verb, group, resource, subresource, namespace, name)


@dataclass
class Authorizer:
    """Roles, ClusterRoles and their bindings, as loaded from manifests."""

    roles: dict[tuple[str, str], list[Rule]] = field(default_factory=dict)  # (ns, name)
    cluster_roles: dict[str, list[Rule]] = field(default_factory=dict)
    # (namespace or None for a ClusterRoleBinding, roleRef kind, roleRef name, subjects)
    bindings: list[tuple[str | None, str, str, tuple[str, ...]]] = field(default_factory=list)

    @classmethod
    def from_files(cls, paths: Iterable[Path] = DEPLOY_RBAC) -> Authorizer:
        docs: list[dict[str, Any]] = []
        for path in paths:
            docs += [d for d in YAML(typ="safe", pure=True).load_all(path.read_text()) if d]
        return cls.from_documents(docs)

    @classmethod
    def from_documents(cls, docs: Sequence[Mapping[str, Any]]) -> Authorizer:
        found = cls()
        for doc in docs:
            if doc.get("apiVersion") != _RBAC_API:
                continue
            meta = doc.get("metadata") or {}
            kind = doc.get("kind")
            if kind in ("Role", "ClusterRole"):
                rules = [_rule(r) for r in doc.get("rules") or []]
                if kind == "Role":
                    found.roles[(meta["namespace"], meta["name"])] = rules
                else:
                    found.cluster_roles[meta["name"]] = rules
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                ref = doc["roleRef"]
                users = tuple(_subject_user(s, meta.get("namespace")) for s in doc["subjects"])
                namespace = meta.get("namespace") if kind == "RoleBinding" else None
                found.bindings.append((namespace, ref["kind"], ref["name"], users))
        return found

    def subjects(self) -> set[str]:
        """Every user some binding names."""
        return {user for *_, users in self.bindings for user in users}

    def allowed(self, attrs: Attributes) -> bool:
        for namespace, ref_kind, ref_name, users in self.bindings:
            if attrs.user not in users:
                continue
            if namespace is not None and namespace != attrs.namespace:
                continue  # a RoleBinding grants in its own namespace only
            if ref_kind == "Role":
                rules = self.roles.get((namespace or "", ref_name), [])
            else:
                rules = self.cluster_roles.get(ref_name, [])
            if any(rule.allows(attrs) for rule in rules):
                return True
        return False


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def _subject_user(subject: Mapping[str, Any], default_namespace: str | None) -> str:
    if subject["kind"] == "ServiceAccount":
        namespace = str(subject.get("namespace") or default_namespace or "")
        return service_account_user(namespace, str(subject["name"]))
    if subject["kind"] == "Group":
        return f"group:{subject['name']}"
    return str(subject["name"])


def _rule(raw: Mapping[str, Any]) -> Rule:
    return Rule(
        api_groups=frozenset(raw.get("apiGroups") or ()),
        resources=frozenset(raw.get("resources") or ()),
        verbs=frozenset(raw.get("verbs") or ()),
        resource_names=frozenset(raw.get("resourceNames") or ()),
    )
