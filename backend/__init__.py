"""The backend: REST API v1, the project service and the composition root of ``nakama up``."""
