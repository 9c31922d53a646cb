"""Cluster mode's adapters: the ports of :mod:`nakama.ports` implemented with GitLab, Harbor,
Kubernetes and Flux. Each talks to its service only through the one client in
:mod:`nakama.clients`; the composition root picks them when ``settings.mode`` is ``"cluster"``.
"""
