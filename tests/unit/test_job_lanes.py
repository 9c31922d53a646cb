"""Which pending job a local worker takes (backend.local.lanes): reloads never wait behind
builds, one user's builds cannot take every build worker, one job per project, newest wins."""

from __future__ import annotations

import pytest

from backend.local.lanes import Head, Lane, Queued, choose, queue_heads

BOB, ALICE, ADMIN = 2, 1, None


def build(id: int, project: str, owner: int | None) -> Head:
    return Head(id=id, project=project, owner=owner, reload=False)


def reload(id: int, project: str, owner: int | None) -> Head:
    return Head(id=id, project=project, owner=owner, reload=True)


def test_only_the_newest_pending_job_of_a_free_project_is_a_head() -> None:
    pending = [Queued(3, "a"), Queued(1, "a"), Queued(2, "b"), Queued(4, "busy"), Queued(5, "a")]
    found = queue_heads(pending, busy={"busy"})
    assert [h.id for h in found.heads] == [2, 5]
    assert found.superseded == {1: 5, 3: 5}  # the busy project's job waits, not superseded


@pytest.mark.parametrize(
    ("lane", "heads", "building", "taken"),
    [
        # Bob's two builds queued first: a reload worker takes Alice's reload behind them.
        ("reload", [build(1, "b1", BOB), build(2, "b2", BOB), reload(3, "a", ALICE)], {}, 3),
        ("reload", [build(1, "b1", BOB)], {}, None),  # a reload worker never builds
        # Bob builds one already: his second waits, Alice's build goes.
        ("build", [build(2, "b2", BOB), build(3, "a", ALICE)], {BOB: 1}, 3),
        ("build", [build(2, "b2", BOB)], {BOB: 1}, None),
        # A build worker takes a reload when no build may start, a build before a reload.
        ("build", [build(2, "b2", BOB), reload(3, "a", ALICE)], {BOB: 1}, 3),
        ("build", [reload(2, "a", ALICE), build(3, "b2", BOB)], {}, 3),
        # In the order submitted among equals; the less busy owner first.
        ("build", [build(4, "b3", BOB), build(5, "a", ALICE)], {}, 4),
        ("build", [build(4, "b3", BOB), build(5, "a", ALICE)], {BOB: 1, ALICE: 0}, 5),
        # Projects made with the admin token are one owner of their own.
        ("build", [build(6, "x", ADMIN), build(7, "y", ADMIN)], {ADMIN: 1}, None),
        ("build", [build(6, "x", ADMIN), build(7, "b", BOB)], {ADMIN: 1}, 7),
    ],
)
def test_choose(
    lane: Lane, heads: list[Head], building: dict[int | None, int], taken: int | None
) -> None:
    got = choose(heads, lane=lane, building=building, builds_per_user=1)
    assert (got.id if got else None) == taken


def test_builds_per_user_is_the_bound() -> None:
    heads = [build(2, "b2", BOB), build(3, "b3", BOB)]
    got = choose(heads, lane="build", building={BOB: 1}, builds_per_user=2)
    assert got is not None and got.id == 2
    assert choose(heads, lane="build", building={BOB: 2}, builds_per_user=2) is None
