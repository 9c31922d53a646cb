"""The GitLab fake's rules: who may see and do what, which hook URLs GitLab refuses, and which
jobs a triggered pipeline gets. Pure functions over the fake's state, each rule with the GitLab
source or document it follows, so that the fake refuses what GitLab refuses.

Roles (``Gitlab::Access``): a user's access to a project is the highest of their direct
membership and their memberships of the project's group and its ancestors (``Member``'s
``highest_group_member`` walks ``source.ancestors``); an administrator sees everything. A private
project or group that a user cannot see is answered 404, not 403, so that its existence does not
leak (GitLab's spec ``members_spec.rb``: "a 404 response when source is private").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML

if TYPE_CHECKING:
    from tests.fakes.gitlab import GitLabFake
    from tests.fakes.gitlab_api import FakeGroup, FakeProject, FakeUser

GUEST, PLANNER, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 15, 20, 30, 40, 50
ADMIN = 60  # not a role: what an administrator may do anywhere
ROLE_NAMES = {
    10: "Guest",
    15: "Planner",
    20: "Reporter",
    25: "Security Manager",
    30: "Developer",
    40: "Maintainer",
    50: "Owner",
}

# ``ci_pipeline_variables_minimum_override_role``: the least role whose pipelines may carry
# pipeline variables (trigger variables are pipeline variables). GitLab's docs ("Restrict pipeline
# variables"): "When users with a lower role try to use pipeline variables, they receive an
# `Insufficient permissions to set pipeline variables` error message"; "For GitLab.com, setting
# defaults updated for all new projects in new namespaces to `no_one_allowed` ... in GitLab 17.7"
# (gitlab#502382).
PIPELINE_VARIABLE_ROLES = {
    "developer": DEVELOPER,
    "maintainer": MAINTAINER,
    "owner": OWNER,
    "no_one_allowed": ADMIN + 1,
}


# --- who may see and do what ---------------------------------------------------------------------
def lineage(fake: GitLabFake, group: FakeGroup) -> list[FakeGroup]:
    """``group`` and its ancestors, nearest first."""
    found = [group]
    while found[-1].parent_id is not None:
        found.append(fake.groups[found[-1].parent_id])
    return found


def inherited(fake: GitLabFake, user_id: int, group: FakeGroup) -> tuple[int, FakeGroup | None]:
    """The highest membership of the user in ``group`` or its ancestors, and where it is."""
    best: tuple[int, FakeGroup | None] = (0, None)
    for found in lineage(fake, group):
        level = found.members.get(user_id, 0)
        if level > best[0]:
            best = (level, found)
    return best


def group_access(fake: GitLabFake, user: FakeUser | None, group: FakeGroup) -> int:
    if user is None:
        return 0
    if user.admin:
        return ADMIN
    return inherited(fake, user.id, group)[0]


def project_access(fake: GitLabFake, user: FakeUser | None, project: FakeProject) -> int:
    if user is None:
        return 0
    if user.admin:
        return ADMIN
    return max(project.members.get(user.id, 0), inherited(fake, user.id, project.group)[0])


def can_see_project(fake: GitLabFake, user: FakeUser | None, project: FakeProject) -> bool:
    if project.visibility == "public":
        return True
    if project.visibility == "internal" and user is not None and not user.bot:
        return True
    return project_access(fake, user, project) >= GUEST


def can_see_group(fake: GitLabFake, user: FakeUser | None, group: FakeGroup) -> bool:
    """A private group is seen by its members (inherited too) and by members of anything in it,
    as GitLab shows a private parent to the members of its subgroups and projects."""
    if group_access(fake, user, group) >= GUEST:
        return True
    if user is None:
        return False
    inside = [g for g in fake.groups.values() if group in lineage(fake, g)]
    if any(g.members.get(user.id) for g in inside):
        return True
    return any(p.group in inside and p.members.get(user.id) for p in fake.projects.values())


# --- the URL blocker for hooks -------------------------------------------------------------------
def hook_url_refusal(
    url: str,
    *,
    allow_local: bool,
    allowlist: Iterable[str],
    instance: str,
    hosts: Mapping[str, str],
) -> str | None:
    """Why GitLab refuses ``url`` as a hook URL, or None.

    ``WebHook`` validates ``url`` with ``public_url: true`` (``app/models/hooks/web_hook.rb``);
    ``PublicUrlValidator`` blocks localhost and the local network unless the admin setting
    ``allow_local_requests_from_web_hooks_and_services`` is on (``AddressableUrlValidator``'s
    ``blocker_args``; the column defaults to false, gitlab#386853) or the host is in the
    ``outbound_local_requests_whitelist``. ``Gitlab::UrlBlocker.validate!`` lets the instance's own
    URL through ("Allow imports from the GitLab instance itself but only from the configured
    ports") and refuses loopback ("Requests to localhost are not allowed"), RFC 1918 and unique
    local addresses ("Requests to the local network are not allowed") and link-local ones. The
    API answers a URL error with ``error!("Invalid url given", 422)`` (``lib/api/hooks/...``'s
    ``save_hook``). Names are not looked up in DNS here (no traffic leaves loopback): "localhost"
    and ``hosts`` stand for a resolver; any other name counts as unresolvable, which GitLab lets
    through (``rescue SocketError``)."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return "URI is invalid"
    if parts.scheme not in ("http", "https") or not host:
        return "Only allowed schemes are http, https"
    port = port or (443 if parts.scheme == "https" else 80)
    mine = urlsplit(instance)
    if (host, port) == (mine.hostname, mine.port or (443 if mine.scheme == "https" else 80)):
        return None
    if allow_local or host in set(allowlist):
        return None
    if host == "localhost" or host.endswith(".localhost"):
        address = "127.0.0.1"
    else:
        address = hosts.get(host, host)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # unresolvable: GitLab lets it through
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in set(allowlist):
        return None
    for networks, why in _BLOCKED:
        if any(ip in network for network in networks if network.version == ip.version):
            return why
    return None


_BLOCKED: tuple[tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], str], ...] = tuple(
    (tuple(ipaddress.ip_network(n) for n in nets), why)
    for nets, why in (
        (
            ("127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128"),
            "Requests to localhost are not allowed",
        ),
        (
            ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
            "Requests to the local network are not allowed",
        ),
        (("100.64.0.0/10",), "Requests to the shared address space are not allowed"),
        (("169.254.0.0/16", "fe80::/10"), "Requests to the link local network are not allowed"),
    )
)


# --- which jobs a triggered pipeline gets ---------------------------------------------------
_RESERVED = frozenset(
    ("stages", "variables", "default", "include", "workflow", "image", "services", "cache")
) | {"before_script", "after_script", "types", "spec"}
_TOKEN = re.compile(r'\s*(\$\{?\w+\}?|"[^"]*"|\'[^\']*\'|==|!=|&&|\|\||\(|\)|null\b)')


class CiConfigError(Exception):
    """A ``.gitlab-ci.yml`` the fake cannot read (GitLab shows it as a YAML error)."""


def _evaluate(expression: str, variables: Mapping[str, str]) -> bool:
    """A ``rules: if:`` expression: ``$VAR``, string literals, ``null``, ``==``, ``!=``, ``&&``,
    ``||`` and parentheses (GitLab's ``Gitlab::Ci::Pipeline::Expression``; ``&&`` binds tighter
    than ``||``). A variable that is not set is null."""
    tokens: list[str] = []
    position = 0
    while position < len(expression):
        if expression[position:].strip() == "":
            break
        found = _TOKEN.match(expression, position)
        if found is None:
            raise CiConfigError(f"unsupported rules expression: {expression!r}")
        tokens.append(found.group(1))
        position = found.end()

    def value(token: str) -> str | None:
        if token.startswith("$"):
            return variables.get(token.strip("${}"))
        if token == "null":
            return None
        return token[1:-1]

    def primary(i: int) -> tuple[Any, int]:
        if i >= len(tokens):
            raise CiConfigError(f"unsupported rules expression: {expression!r}")
        if tokens[i] == "(":
            result, i = either(i + 1)
            if i >= len(tokens) or tokens[i] != ")":
                raise CiConfigError(f"unbalanced parentheses in {expression!r}")
            return result, i + 1
        left = value(tokens[i])
        if i + 1 < len(tokens) and tokens[i + 1] in ("==", "!="):
            right = value(tokens[i + 2]) if i + 2 < len(tokens) else None
            same = left == right
            return (same if tokens[i + 1] == "==" else not same), i + 3
        return bool(left), i + 1  # a variable alone: set and not empty

    def both(i: int) -> tuple[bool, int]:
        result, i = primary(i)
        while i < len(tokens) and tokens[i] == "&&":
            right, i = primary(i + 1)
            result = bool(result) and bool(right)
        return bool(result), i

    def either(i: int) -> tuple[bool, int]:
        result, i = both(i)
        while i < len(tokens) and tokens[i] == "||":
            right, i = both(i + 1)
            result = result or right
        return result, i

    result, end = either(0)
    if end != len(tokens):
        raise CiConfigError(f"unsupported rules expression: {expression!r}")
    return bool(result)


def _matches(rules: Any, variables: Mapping[str, str]) -> bool:
    """Whether ``rules`` add the job (or let the pipeline run): the first rule whose ``if``
    holds decides, ``when: never`` excludes; no rule matching excludes."""
    if not isinstance(rules, list):
        raise CiConfigError("rules must be a list")
    for rule in rules:
        if not isinstance(rule, dict):
            raise CiConfigError("each rule must be a hash")
        if "if" not in rule or _evaluate(str(rule["if"]), variables):
            return rule.get("when", "on_success") != "never"
    return False


def _load(content: bytes) -> dict[str, Any]:
    loaded = YAML(typ="safe").load(content)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CiConfigError("a CI configuration must be a hash")
    return loaded


def _documents(files: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """``.gitlab-ci.yml`` and its ``include: local`` files, parsed."""
    root = files.get(".gitlab-ci.yml")
    if root is None:
        raise CiConfigError("no .gitlab-ci.yml")
    loaded = _load(root)
    includes = loaded.get("include") or []
    if isinstance(includes, str | dict):
        includes = [includes]
    documents = [loaded]
    for include in includes:
        local = include if isinstance(include, str) else include.get("local")
        if not isinstance(local, str):
            raise CiConfigError(f"the fake reads local includes only, not {include!r}")
        content = files.get(local.lstrip("/"))
        if content is None:
            raise CiConfigError(f"Local file `{local}` does not exist!")
        documents.append(_load(content))
    return documents


def triggered_jobs(
    files: Mapping[str, bytes], variables: Mapping[str, str]
) -> list[tuple[str, str]] | None:
    """(name, stage) of the jobs a trigger pipeline gets from the project's CI configuration
    with ``variables`` (the trigger's and the predefined ones); None when ``workflow: rules``
    filter the pipeline out."""
    jobs: list[tuple[str, str]] = []
    for document in _documents(files):
        workflow = document.get("workflow")
        if (
            isinstance(workflow, dict)
            and "rules" in workflow
            and not _matches(workflow["rules"], variables)
        ):
            return None
        for name, job in document.items():
            if name in _RESERVED or name.startswith(".") or not isinstance(job, dict):
                continue
            if "rules" in job and not _matches(job["rules"], variables):
                continue
            jobs.append((name, str(job.get("stage") or "test")))
    return jobs
