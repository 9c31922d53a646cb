"""Nakama's core, the bottom floor: settings, models, ports, planning, errors, the database and
the one home of each client (git, GitLab, Harbor, OCI registries, Kubernetes).

It imports nothing of Nakama's other packages. The components (webhook_receiver, image_builder,
code_reloader, flux) build on it, the backend (mode adapters, services, HTTP, composition root)
on them, and the CLI (nakama_cli) on top; pyproject.toml's import contracts check the direction.
"""

__version__ = "0.1.0"
