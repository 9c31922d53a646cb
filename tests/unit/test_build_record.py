"""nakama.build_record: which commit a pod syncs when its image and its restart disagree (D10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from code_reloader.cli import sync_main
from nakama.build_record import KEEP, choose_commit, entry, read_builds, recorded

OLD = "1" * 40
BUILT = "2" * 40
LATER = "3" * 40


def tag_of(commit: str) -> str:
    return f"main-{commit[:8]}-20261204120000"


def builds(*rows: tuple[str, int]) -> dict[str, str]:
    return dict(entry(commit, pid) for commit, pid in rows)


def test_a_dependency_push_runs_the_built_commit_on_its_image() -> None:
    # Restarted on OLD by pipeline 3; BUILT's build was submitted as pipeline 5.
    record = builds((BUILT, 5))
    assert choose_commit(commit=OLD, pipeline="3", image_tag=tag_of(BUILT), builds=record) == BUILT
    # Never restarted (no annotation): the first image's commit is baked in, a build wins.
    assert choose_commit(commit=OLD, pipeline="", image_tag=tag_of(BUILT), builds=record) == BUILT


def test_a_code_push_made_during_the_build_keeps_its_code() -> None:
    # BUILT's build is pipeline 5; a code-only push LATER was reloaded by pipeline 6 before the
    # image rolled out: LATER already holds the dependency change, so it stays.
    record = builds((BUILT, 5))
    assert (
        choose_commit(commit=LATER, pipeline="6", image_tag=tag_of(BUILT), builds=record) == LATER
    )


def test_a_rollback_after_a_reload_runs_the_old_commit() -> None:
    # A rollback is a build pipeline (8) of the old commit whose image is retagged.
    record = builds((OLD, 8), (BUILT, 5))
    assert choose_commit(commit=LATER, pipeline="6", image_tag=tag_of(OLD), builds=record) == OLD


@pytest.mark.parametrize(
    ("tag", "record"),
    [
        ("main-00000000-19700101000000", builds((BUILT, 5))),  # the placeholder: no build
        (tag_of(BUILT), {}),  # no record (an older Nakama, or the ConfigMap is gone)
        ("latest", builds((BUILT, 5))),  # not one of Nakama's tags
        ("", builds((BUILT, 5))),
        (tag_of(BUILT), {BUILT[:8]: "not a commit 5"}),  # a record that cannot be read
    ],
)
def test_anything_unreadable_leaves_the_annotations_commit(
    tag: str, record: dict[str, str]
) -> None:
    assert choose_commit(commit=OLD, pipeline="3", image_tag=tag, builds=record) == OLD


def test_the_record_keeps_the_newest_builds_only() -> None:
    data: dict[str, str] = {}
    commits = [f"{i:08x}" + "a" * 32 for i in range(KEEP + 5)]
    for pid, commit in enumerate(commits, start=1):
        data = recorded(data, add=entry(commit, pid))
    assert len(data) == KEEP
    assert set(data) == {c[:8] for c in commits[-KEEP:]}
    with pytest.raises(ValueError, match="full lower-case hash"):
        entry("abc", 1)


def test_the_sync_command_reads_the_mounted_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kubelet mounts a ConfigMap as one file per key next to its own ``..data`` links;
    ``nakama reload sync --builds`` reads the keys and says when the image's build wins. The
    sync itself then fails here (no such repository), after the choice is printed."""
    mount = tmp_path / "builds"
    (mount / "..2026_12_04").mkdir(parents=True)
    key, value = entry(BUILT, 5)
    (mount / "..2026_12_04" / key).write_text(value)
    (mount / key).symlink_to(f"..2026_12_04/{key}")
    (mount / "..data").symlink_to("..2026_12_04")
    assert read_builds(mount) == {key: value}
    assert read_builds(tmp_path / "absent") == {}
    code = sync_main(
        [
            "--repo", str(tmp_path / "no-repo"), "--commit", OLD, "--pipeline", "3",
            "--image-tag", tag_of(BUILT), "--builds", str(mount), "--root", str(tmp_path / "code"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert f"was built from {BUILT}" in err
    assert code == 1 and BUILT in err.splitlines()[-1]  # it tried to fetch BUILT, not OLD
