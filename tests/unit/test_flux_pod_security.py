"""Every app pod Nakama renders meets the "restricted" Pod Security Standard, checked control by
control with tests/pss.py; and that checker does fail each control it claims to check."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from flux.manifests import AppProject, GitOpsLayout, render_manifests
from nakama.limits import effective_limits
from nakama.settings import FluxSettings, HarborSettings, LimitsSettings
from tests.pss import violations
from tests.unit.test_flux_manifests import CASES, NAMESPACE

DEFAULTS = effective_limits(LimitsSettings())
Pod = dict[str, Any]


def rendered_pods() -> dict[str, tuple[dict[str, Any], Pod]]:
    """Every golden case, and the default app in each visibility, with and without an
    autoscaler, with fixed replicas, small and large limits, on either volume access mode."""
    apps: dict[str, tuple[AppProject, FluxSettings, GitOpsLayout]] = {
        f"golden-{case}": (project, settings, layout)
        for case, (project, settings, _harbor, layout) in CASES.items()
    }
    base = AppProject(name="demo", repo_url="https://g.example/demo.git", initial_commit="a" * 40)
    for visibility in ("private", "internal", "public"):
        for controller in ("nginx", "traefik"):
            apps[f"{visibility}-{controller}"] = (
                replace(base, visibility=visibility),
                FluxSettings(ingress_controller=controller),
                GitOpsLayout(),
            )
    variants = {
        "autoscaler": replace(DEFAULTS, replicas=2, autoscale_max=10),
        "replicas": replace(DEFAULTS, replicas=4),
        "small": replace(DEFAULTS, memory_mib=64, cpu=0.05, disk_mib=16),
        "large": replace(DEFAULTS, memory_mib=65536, cpu=16.0, disk_mib=1024 * 1024),
    }
    for label, limits in variants.items():
        for mode in ("ReadWriteOnce", "ReadWriteMany"):
            apps[f"{label}-{mode}"] = (
                replace(base, limits=limits, command=("python", "app.py")),
                FluxSettings(),
                GitOpsLayout(volume_access_mode=mode),
            )
    pods: dict[str, tuple[dict[str, Any], Pod]] = {}
    for label, (project, settings, layout) in apps.items():
        docs = render_manifests(
            project, settings, harbor=HarborSettings(), namespace=NAMESPACE, layout=layout
        )
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        template = deployment["spec"]["template"]
        pods[label] = (template["metadata"], template["spec"])
    return pods


PODS = rendered_pods()


@pytest.mark.parametrize("label", sorted(PODS))
def test_every_rendered_app_pod_meets_the_restricted_standard(label: str) -> None:
    metadata, spec = PODS[label]
    assert violations(spec, metadata) == []
    assert spec["automountServiceAccountToken"] is False  # no API token in an app pod
    assert len(spec["initContainers"]) == 1 and len(spec["containers"]) == 1


def test_the_cases_cover_autoscaling_fixed_replicas_and_both_access_modes() -> None:
    specs = [spec for _meta, spec in PODS.values()]
    assert any("affinity" in s for s in specs) and any("affinity" not in s for s in specs)
    wanted = {"public-nginx", "private-traefik", "autoscaler-ReadWriteOnce", "large-ReadWriteMany"}
    assert wanted | {f"golden-{case}" for case in CASES} <= set(PODS)


def _good() -> Pod:
    _meta, spec = PODS["golden-demo"]
    return copy.deepcopy(spec)


def _app(pod: Pod) -> dict[str, Any]:
    return pod["containers"][0]  # type: ignore[no-any-return]


def _init(pod: Pod) -> dict[str, Any]:
    return pod["initContainers"][0]  # type: ignore[no-any-return]


_PARTS: dict[str, Callable[[Pod], dict[str, Any]]] = {
    "app": _app,
    "init": _init,
    "pod": lambda p: p,
}


def _set(path: str, value: Any) -> Callable[[Pod], None]:
    """A change at ``path`` (dots; ``app.``/``init.`` start at that container)."""

    def change(pod: Pod) -> None:
        head, *rest = path.split(".")
        node: Any = _PARTS[head](pod)
        for key in rest[:-1]:
            node = node.setdefault(key, {})
        node[rest[-1]] = value

    return change


def _delete(path: str) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        head, *rest = path.split(".")
        node: Any = _PARTS[head](pod)
        for key in rest[:-1]:
            node = node[key]
        del node[rest[-1]]

    return change


def _add_volume(volume: dict[str, Any]) -> Callable[[Pod], None]:
    return lambda pod: pod["volumes"].append(volume)


def _add_ephemeral(container: dict[str, Any]) -> Callable[[Pod], None]:
    return lambda pod: pod.setdefault("ephemeralContainers", []).append(container)


# (control the checker must name, change that breaks it)
BAD: list[tuple[str, Callable[[Pod], None]]] = [
    ("Host Namespaces", _set("pod.hostNetwork", True)),
    ("Host Namespaces", _set("pod.hostPID", True)),
    ("Host Namespaces", _set("pod.hostIPC", True)),
    ("HostProcess", _set("pod.securityContext.windowsOptions.hostProcess", True)),
    ("HostProcess", _set("init.securityContext.windowsOptions.hostProcess", True)),
    ("Privileged Containers", _set("app.securityContext.privileged", True)),
    ("Privileged Containers", _set("init.securityContext.privileged", True)),
    ("Capabilities", _set("app.securityContext.capabilities.add", ["SYS_ADMIN"])),
    ("Capabilities", _set("init.securityContext.capabilities.add", ["NET_RAW"])),
    ("Capabilities", _set("app.securityContext.capabilities.drop", ["NET_RAW"])),
    ("Capabilities", _delete("init.securityContext.capabilities")),
    ("HostPath Volumes", _add_volume({"name": "host", "hostPath": {"path": "/"}})),
    ("Volume Types", _add_volume({"name": "host", "hostPath": {"path": "/"}})),
    ("Volume Types", _add_volume({"name": "n", "nfs": {"server": "x", "path": "/"}})),
    ("Volume Types", _add_volume({"name": "g", "gitRepo": {"repository": "x"}})),
    ("Volume Types", _add_volume({"name": "none"})),
    ("Host Ports", _set("app.ports", [{"containerPort": 8501, "hostPort": 8501}])),
    ("AppArmor", _set("app.securityContext.appArmorProfile", {"type": "Unconfined"})),
    ("AppArmor", _set("pod.securityContext.appArmorProfile", {"type": "Unconfined"})),
    ("SELinux", _set("pod.securityContext.seLinuxOptions", {"type": "spc_t"})),
    ("SELinux", _set("init.securityContext.seLinuxOptions", {"user": "system_u"})),
    ("SELinux", _set("app.securityContext.seLinuxOptions", {"role": "sysadm_r"})),
    ("/proc Mount Type", _set("app.securityContext.procMount", "Unmasked")),
    ("Seccomp", _set("pod.securityContext.seccompProfile", {"type": "Unconfined"})),
    ("Seccomp", _set("init.securityContext.seccompProfile", {"type": "Unconfined"})),
    ("Seccomp", _delete("pod.securityContext.seccompProfile")),  # must be set somewhere
    ("Sysctls", _set("pod.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}])),
    ("Privilege Escalation", _set("app.securityContext.allowPrivilegeEscalation", True)),
    ("Privilege Escalation", _delete("init.securityContext.allowPrivilegeEscalation")),
    ("Running as Non-root", _delete("pod.securityContext.runAsNonRoot")),
    ("Running as Non-root", _set("init.securityContext.runAsNonRoot", False)),
    ("Running as Non-root user", _set("pod.securityContext.runAsUser", 0)),
    ("Running as Non-root user", _set("app.securityContext.runAsUser", 0)),
    ("Probe / Lifecycle Host", _set("app.livenessProbe.httpGet.host", "10.0.0.1")),
    ("Probe / Lifecycle Host", _set("app.lifecycle.preStop.httpGet.host", "10.0.0.1")),
    (
        "Privilege Escalation",  # ephemeral containers are checked too
        _add_ephemeral({"name": "debug", "image": "busybox"}),
    ),
]


@pytest.mark.parametrize(
    ("control", "change"), BAD, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BAD)]
)
def test_the_checker_fails_a_pod_that_breaks_a_control(
    control: str, change: Callable[[Pod], None]
) -> None:
    pod = _good()
    assert violations(pod) == []
    change(pod)
    found = violations(pod)
    assert any(line.startswith(f"{control}: ") for line in found), found


def test_container_settings_may_stand_in_for_the_pod_and_narrow_it() -> None:
    pod = _good()
    del pod["securityContext"]["seccompProfile"]
    del pod["securityContext"]["runAsNonRoot"]
    for container in (_app(pod), _init(pod)):
        container["securityContext"]["seccompProfile"] = {"type": "Localhost"}
        container["securityContext"]["runAsNonRoot"] = True
    _app(pod)["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    pod["securityContext"]["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start"}]
    assert violations(pod) == []


def test_allowed_apparmor_annotations_pass_and_others_fail() -> None:
    pod = _good()
    ok = {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}
    assert violations(pod, {"annotations": ok}) == []
    bad = {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
    assert [v.split(":")[0] for v in violations(pod, {"annotations": bad})] == ["AppArmor"]
