"""The web UI: server-rendered pages (Jinja2) with htmx for the live parts, on the same
services as the REST API."""
