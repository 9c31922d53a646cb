"""The pure decisions of ``nakama up``'s guards: which hosts are wildcards, the suggested public
URL, and reading the data dir lock's holder."""

from __future__ import annotations

import pytest

from nakama.datadir_lock import Holder, describe, parse
from nakama.listening import is_wildcard, machine_name, wildcard_problem
from nakama.settings import Settings


@pytest.mark.parametrize(
    ("host", "wildcard"),
    [
        ("0.0.0.0", True),  # noqa: S104 - the cases under test
        ("::", True),
        ("[::]", True),
        ("0:0::0", True),
        ("", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("192.168.1.10", False),
        ("nakama.example.com", False),
    ],
)
def test_wildcard_hosts(host: str, wildcard: bool) -> None:
    assert is_wildcard(host) is wildcard


@pytest.mark.parametrize(
    ("fqdn", "hostname", "name"),
    [
        ("build-7.example.com", "build-7", "build-7.example.com"),
        ("localhost", "vm", "vm"),  # the host name listed for 127.0.0.1 in /etc/hosts
        ("localhost.localdomain", "box", "box"),
        ("Box.Example.COM.", "box", "box.example.com"),
        ("localhost", "localhost", "this-machine.example.com"),
    ],
)
def test_machine_name(fqdn: str, hostname: str, name: str) -> None:
    assert machine_name(fqdn, hostname) == name


def test_wildcard_problem_names_the_setting_and_a_url() -> None:
    problem = wildcard_problem(host="0.0.0.0", port=8080, public_url=None, machine="box")  # noqa: S104
    assert problem is not None and "NAKAMA_PUBLIC_URL=http://box:8080" in problem
    assert (
        wildcard_problem(host="::", port=8080, public_url="https://n.example", machine="b") is None
    )
    assert wildcard_problem(host="127.0.0.1", port=8080, public_url=None, machine="b") is None


@pytest.mark.parametrize(
    ("text", "holder"),
    [
        (describe(123, "http://box:8000"), Holder(pid=123, url="http://box:8000")),
        # written over a longer old content, not yet cut: the first two lines are the new ones
        ("pid 7\nurl http://a:1\nhttp://old-and-longer:9\n", Holder(pid=7, url="http://a:1")),
        ("", Holder(pid=None, url=None)),  # emptied by a server that stopped
        ("pid x\n", Holder(pid=None, url=None)),
    ],
)
def test_lock_holder(text: str, holder: Holder) -> None:
    assert parse(text) == holder


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:8123"), ("::1", "http://[::1]:8123")],
)
def test_the_base_url_of_an_address_without_a_public_url(host: str, url: str) -> None:
    assert Settings(host=host, port=8123, public_url=None).base_url == url
