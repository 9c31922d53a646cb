"""The backend: the composition root of ``nakama up`` (:mod:`backend.app`), the REST API v1 and
web UI, the project and variable services, the app gateway, and the two modes' adapters
(:mod:`backend.local`, :mod:`backend.cluster`), which implement :mod:`nakama.ports` on top of the
components. Services and the HTTP layer see the modes only through the ports."""
