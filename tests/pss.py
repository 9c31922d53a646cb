"""Check a pod against every control of the "restricted" Pod Security Standard.

The controls are those of https://kubernetes.io/docs/concepts/security/pod-security-standards/
as the admission plugin implements them (kubernetes/pod-security-admission, ``policy/check_*.go``
@ 8f84a87c, 2026-07): the whole Baseline profile, then Restricted's own. Every container is
checked: ``containers``, ``initContainers`` and ``ephemeralContainers``. Linux pods only (the
Windows exemptions are not modelled); ``hostUsers: false`` relaxes nothing here, so a pod that
passes passes in any namespace. The sysctl list is the newest one (Kubernetes 1.37), a superset
of older ones; none of Nakama's pods sets a sysctl.

:func:`violations` returns one line per broken control, empty for a pod that passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Baseline: capabilities a container may add (Docker's default set); Restricted narrows this.
RESTRICTED_ADD = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "net.ipv4.tcp_slow_start_after_idle",
        "net.ipv4.tcp_notsent_lowat",
    }
)
# Restricted: the only inline volume sources allowed (everything else, hostPath included, is not).
ALLOWED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_SECCOMP_ANNOTATIONS = (
    "seccomp.security.alpha.kubernetes.io/pod",
    "container.seccomp.security.alpha.kubernetes.io/",
)


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``<list>/<name>``, container) for every container of the pod."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            yield f"{key}/{container.get('name', '?')}", container


def violations(spec: dict[str, Any], metadata: dict[str, Any] | None = None) -> list[str]:
    """What in the pod ``spec`` (and its template's ``metadata``) the restricted profile
    forbids, one line each as ``<control>: <where>: <what>``; empty when the pod passes."""
    meta = metadata or {}
    pod_sc: dict[str, Any] = spec.get("securityContext") or {}
    found: list[str] = []

    def bad(control: str, where: str, what: str) -> None:
        found.append(f"{control}: {where}: {what}")

    # --- Baseline ------------------------------------------------------------------------------
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        bad("HostProcess", "pod", "windowsOptions.hostProcess is true")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad("Host Namespaces", "pod", f"{field} is true")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            bad("HostPath Volumes", f"volume {volume.get('name')}", "hostPath")
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(_APPARMOR_ANNOTATION) and not (
            value in ("", "runtime/default") or value.startswith("localhost/")
        ):
            bad("AppArmor", f"annotation {key}", repr(value))
        if key.startswith(_SECCOMP_ANNOTATIONS):
            bad("Seccomp", f"annotation {key}", "the annotations are gone: use seccompProfile")
    _apparmor(pod_sc, "pod", bad)
    _selinux(pod_sc, "pod", bad)
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad("Sysctls", "pod", f"{sysctl.get('name')} is not in the safe set")
    for where, container in containers(spec):
        sc: dict[str, Any] = container.get("securityContext") or {}
        if sc.get("privileged"):
            bad("Privileged Containers", where, "privileged is true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad("HostProcess", where, "windowsOptions.hostProcess is true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                bad("Host Ports", where, f"hostPort {port['hostPort']}")
        _apparmor(sc, where, bad)
        _selinux(sc, where, bad)
        if sc.get("procMount") not in (None, "Default"):
            bad("/proc Mount Type", where, f"procMount {sc['procMount']!r}")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            handler = container.get(probe) or {}
            for kind in ("httpGet", "tcpSocket"):
                if (handler.get(kind) or {}).get("host"):
                    bad("Probe / Lifecycle Host", where, f"{probe}.{kind}.host is set")
        for hook in ("postStart", "preStop"):
            handler = (container.get("lifecycle") or {}).get(hook) or {}
            for kind in ("httpGet", "tcpSocket"):
                if (handler.get(kind) or {}).get("host"):
                    bad("Probe / Lifecycle Host", where, f"lifecycle.{hook}.{kind}.host is set")

    # --- Restricted ----------------------------------------------------------------------------
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds or not kinds <= ALLOWED_VOLUMES:
            bad("Volume Types", f"volume {volume.get('name')}", f"type {sorted(kinds)}")
    pod_non_root = pod_sc.get("runAsNonRoot")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_non_root is False:
        bad("Running as Non-root", "pod", "runAsNonRoot is false")
    if pod_sc.get("runAsUser") == 0:
        bad("Running as Non-root user", "pod", "runAsUser is 0")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_TYPES:
        bad("Seccomp", "pod", f"seccompProfile.type {pod_seccomp!r}")
    for where, container in containers(spec):
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            bad("Privilege Escalation", where, "allowPrivilegeEscalation is not false")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            bad("Running as Non-root", where, "runAsNonRoot is not true (pod or container)")
        if sc.get("runAsUser") == 0:
            bad("Running as Non-root user", where, "runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_TYPES:
            bad("Seccomp", where, f"seccompProfile.type {seccomp!r} (pod or container)")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            bad("Capabilities", where, "capabilities.drop lacks ALL")
        extra = set(capabilities.get("add") or []) - RESTRICTED_ADD
        if extra:
            bad("Capabilities", where, f"capabilities.add {sorted(extra)}")
    return found


def _apparmor(sc: dict[str, Any], where: str, bad: Any) -> None:
    profile = sc.get("appArmorProfile")
    if profile is not None and profile.get("type") not in APPARMOR_TYPES:
        bad("AppArmor", where, f"appArmorProfile.type {profile.get('type')!r}")


def _selinux(sc: dict[str, Any], where: str, bad: Any) -> None:
    options = sc.get("seLinuxOptions") or {}
    if options.get("type", "") not in SELINUX_TYPES:
        bad("SELinux", where, f"seLinuxOptions.type {options['type']!r}")
    for field in ("user", "role"):
        if options.get(field):
            bad("SELinux", where, f"seLinuxOptions.{field} is set")
