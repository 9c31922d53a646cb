"""App addresses and reading the app's name back from a Host header (nakama/hosts.py)."""

from __future__ import annotations

import pytest

from nakama.hosts import BadHost, app_address, app_of_host, split_host


@pytest.mark.parametrize(
    ("host", "app"),
    [
        ("sales.localhost:8000", "sales"),
        ("SALES.LocalHost", "sales"),
        ("sales.localhost.", "sales"),
        ("sales.apps.example.com", None),  # another domain: Nakama itself
        ("localhost:8000", None),
        ("127.0.0.1:8000", None),
        ("a.sales.localhost", None),  # deeper than an app's name
        ("9lives.localhost", None),  # no project name starts with a digit
    ],
)
def test_app_of_host(host: str, app: str | None) -> None:
    assert app_of_host(host, apps_domain="localhost") == app


@pytest.mark.parametrize(
    "host",
    [
        "sales.localhost:8000/admin",
        "sales.localhost:8000:8000",
        "sales.localhost:port",
        "sales.localhost:0",
        "sales.localhost:65536",
        "user@sales.localhost",
        "sales localhost",
        "sales..localhost",
        "-x.localhost",
        "",
        "x" * 300 + ".localhost",
    ],
)
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(BadHost):
        app_of_host(host, apps_domain="localhost")


def test_split_host() -> None:
    assert split_host("Sales.Localhost:8080") == ("sales.localhost", 8080)
    assert split_host("sales.localhost") == ("sales.localhost", None)


@pytest.mark.parametrize(
    ("base_url", "domain", "address"),
    [
        ("http://127.0.0.1:8000", "localhost", "http://sales.localhost:8000/"),
        ("https://nakama.example.com", "apps.example.com", "https://sales.apps.example.com/"),
        (
            "https://nakama.example.com:8443/",
            ".apps.example.com.",
            "https://sales.apps.example.com:8443/",
        ),
    ],
)
def test_app_address_takes_the_public_urls_scheme_and_port(
    base_url: str, domain: str, address: str
) -> None:
    assert app_address("sales", apps_domain=domain, base_url=base_url) == address
