from datetime import UTC, datetime, timedelta, timezone

import pytest

from nakama.settings import DEFAULT_DEPENDENCY_FILES
from nakama.tagging import dependency_hash, image_tag, is_dependency_file, tag_timestamp

NOW = datetime(2026, 11, 22, 4, 5, 6, tzinfo=UTC)


def test_image_tag_is_branch_shortsha_utc_stamp() -> None:
    tag = image_tag(branch="main", sha="da1560886d4f094c3e6c9ef40349f7d38b5d27d7", now=NOW)
    assert tag == "main-da156088-20261122040506"
    assert tag_timestamp(tag) == "20261122040506"


def test_image_tag_converts_to_utc_and_sanitises_branch() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert image_tag(branch="feature/x y", sha="ab" * 20, now=local) == (
        "feature-x-y-abababab-20261122040506"
    )


def test_image_tag_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        image_tag(branch="main", sha="a" * 40, now=datetime(2026, 1, 1))


def test_tags_sort_by_time() -> None:
    tags = [
        image_tag(branch="main", sha=f"{i:040x}", now=NOW + timedelta(seconds=i * 7))
        for i in (3, 1, 2)
    ]
    assert sorted(tags, key=lambda t: tag_timestamp(t) or "") == [tags[1], tags[2], tags[0]]


def test_dependency_hash_depends_on_paths_and_contents_not_order() -> None:
    a = {"requirements.txt": b"streamlit\n", "pyproject.toml": b"[project]\n"}
    b = dict(reversed(list(a.items())))
    assert dependency_hash(a) == dependency_hash(b)
    assert dependency_hash(a) != dependency_hash({**a, "requirements.txt": b"streamlit==1\n"})
    assert dependency_hash({"a": b"bc"}) != dependency_hash({"ab": b"c"})
    assert dependency_hash({}) == dependency_hash({})


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("requirements.txt", True),
        ("requirements-dev.txt", True),
        ("pyproject.toml", True),
        ("uv.lock", True),
        ("Dockerfile", True),
        (".python-version", True),
        ("packages.txt", True),
        ("app.py", False),
        ("src/pyproject.toml", False),
        ("README.md", False),
    ],
)
def test_default_dependency_files(path: str, expected: bool) -> None:
    assert is_dependency_file(path, DEFAULT_DEPENDENCY_FILES) is expected
