"""Keeps apps off each other's ports: apps share the host's network (they listen on loopback
for the gateway and may call out), so without a rule any app could connect to another app's
loopback port and read a private app past the gateway's sign-in.

As root, Nakama puts one iptables (and ip6tables) chain of its own in front of ``OUTPUT``: a TCP
connection from a sandbox uid (apps and builds) to the app port range on loopback is refused
with a reset; only its first packet is matched, so an app's answers on connections it accepted
pass whatever their destination port.
Nakama's own connections (the gateway, health checks) are root's and pass. The chain's name
carries the instance, so two Nakamas on one machine keep their own; a chain left by a Nakama
that died is replaced at the next start.
"""

from __future__ import annotations

import shutil
import subprocess

from nakama.logs import get_logger

log = get_logger(__name__)

_TOOLS = (("iptables", "127.0.0.0/8"), ("ip6tables", "::1/128"))


class LoopbackGuard:
    def __init__(
        self, *, instance: str, uids: tuple[int, int], ports: tuple[int, int], enabled: bool
    ) -> None:
        """``uids`` and ``ports``: first and last, both included."""
        self.chain = f"NAKAMA-{instance[:12]}"
        self._uids, self._ports, self._enabled = uids, ports, enabled
        self.active: list[str] = []  # the tools whose rules are in place

    def describe(self) -> str:
        if self.active:
            return "apps cannot connect to each other's ports (iptables owner rule)"
        return (
            "apps CAN connect to each other's loopback ports (no iptables rule: needs root and "
            "iptables); a private app is then readable by other apps' code"
        )

    def install(self) -> None:
        """Put the rules in place where the tools exist; never raises (the gap is logged)."""
        if not self._enabled:
            return
        for tool, loopback in _TOOLS:
            path = shutil.which(tool)
            if path is None:
                continue
            try:
                self._install(path, loopback)
            except (OSError, subprocess.CalledProcessError) as exc:
                why = getattr(exc, "stderr", b"") or str(exc)
                log.warning("loopback rule not set", tool=tool, error=str(why)[:300])
                continue
            self.active.append(path)

    def _install(self, tool: str, loopback: str) -> None:
        chain, (uid_a, uid_b), (port_a, port_b) = self.chain, self._uids, self._ports
        if _run(tool, "-N", chain, check=False).returncode != 0:
            _run(tool, "-F", chain)  # left by an earlier run: start afresh
        _run(
            tool,
            # --syn: only a connection's first packet. Without it the rule also reset an
            # app's answers to the gateway whenever the gateway's source port (an ephemeral
            # one) fell in the app port range: connections from Nakama timed out at random.
            *("-A", chain, "-p", "tcp", "--syn", "-d", loopback),
            *("--dport", f"{port_a}:{port_b}"),
            *("-m", "owner", "--uid-owner", f"{uid_a}-{uid_b}"),
            *("-j", "REJECT", "--reject-with", "tcp-reset"),
        )
        if _run(tool, "-C", "OUTPUT", "-j", chain, check=False).returncode != 0:
            _run(tool, "-I", "OUTPUT", "-j", chain)

    def remove(self) -> None:
        for tool in self.active:
            _run(tool, "-D", "OUTPUT", "-j", self.chain, check=False)
            _run(tool, "-F", self.chain, check=False)
            _run(tool, "-X", self.chain, check=False)
        self.active = []


def _run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    # -w: wait for the xtables lock rather than fail when another program holds it.
    return subprocess.run([tool, "-w", *args], capture_output=True, check=check, timeout=30)
