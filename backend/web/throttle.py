"""Failed sign-ins slow down guessing, per client address: after a few wrong passwords for one
user from one address, or many for anyone from one address, the next try from there waits,
and each further failure doubles the wait (:mod:`nakama.backoff`).

Nothing is keyed on the user alone: wrong guesses by a stranger make the stranger wait, never
the user signing in from elsewhere (a lock per user would let anyone lock anyone out). The
address is the connection's, or the one a trusted proxy names (``web.trusted_proxies``).
A try is counted as failed before its password is checked, so concurrent guesses cannot all
get through while the checks run."""

from __future__ import annotations

import time
from collections.abc import Callable

from nakama.backoff import Backoff, Rule
from nakama.settings import WebSettings

PAIR = "signin-address-user"
ADDRESS = "signin-address"


class SignInThrottle:
    def __init__(self, web: WebSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        def rule(free: int) -> Rule:
            return Rule(
                free=free, initial_s=web.signin_backoff_initial_s, max_s=web.signin_backoff_max_s
            )

        self._backoff = Backoff(
            {
                PAIR: rule(web.signin_failures_per_user),
                ADDRESS: rule(web.signin_failures_per_address),
            },
            clock=clock,
        )

    @staticmethod
    def _keys(address: str, username: str) -> dict[str, str]:
        return {PAIR: f"{address} {username}", ADDRESS: address}

    def reserve(self, address: str, username: str) -> float:
        """0.0: the try may be checked now (and counts as failed until :meth:`succeeded`);
        else the seconds to wait, and it must not be checked."""
        return self._backoff.reserve(self._keys(address, username))

    def succeeded(self, address: str, username: str) -> None:
        """The try was right: it does not count, and this user starts afresh from here."""
        self._backoff.succeeded(self._keys(address, username), forget=(PAIR,))
