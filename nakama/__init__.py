"""Nakama's shared core: settings, models, ports, errors and the one home of each client.

Components (webhook_receiver, image_builder, code_reloader, backend) import from here and never
from each other's internals.
"""

__version__ = "0.1.0"
