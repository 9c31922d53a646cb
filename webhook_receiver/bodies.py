"""Hook bodies from strangers: bounded reads and the checks made before a body is parsed.

Anyone can POST to the receiver, so a body is worth nothing until its token matched. The intake
finds whose token to check from the URL (or, on the older URLs without a project, from a search
of the body's first 64 KiB), checks it before reading further, reads at most ``max_body_bytes``
and only then parses, in a worker thread: :func:`parse_object` measures the nesting first, so
a deeply nested body is a 400 rather than a ``RecursionError`` (a 500 and a traceback in the
log, review M7).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request

BODY_SETTING = "receiver.max_body_bytes (NAKAMA_RECEIVER__MAX_BODY_BYTES)"
DEPTH_SETTING = "receiver.max_json_depth (NAKAMA_RECEIVER__MAX_JSON_DEPTH)"

# Bytes and seconds a refused body is read for after the answer, to be dropped (see
# BodyReader.discard): GitLab caps hook bodies at 25 MB and gives up on a hook after 10 s.
DISCARD_BYTES = 32 * 1024 * 1024
DISCARD_WITHIN_S = 10.0

# Bytes of a body searched for its project on the URLs without one: GitLab's push hook has it
# after a few short fields (the ref, the user), before the commits, within 2 KB. A stranger's
# body is never read further than this before its token is checked.
PROJECT_WITHIN = 64 * 1024
# The first "path_with_namespace" of a push hook is its project's (GitLab and local mode alike).
# A value with escapes is not matched: such a body must use the URL that names the project.
_PROJECT_PATH = re.compile(rb'"path_with_namespace"\s*:\s*"([^"\\]{1,255})"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Opening brackets become 1 and closing ones -1 (0xff read as a signed byte).
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class Rejection(Exception):
    """A delivery answered with a 4xx and not stored."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(limit: int) -> Rejection:
    return Rejection(413, f"body larger than {limit} bytes, the limit of {BODY_SETTING}")


def check_declared_size(declared: str | None, limit: int) -> None:
    """Refuse on the Content-Length header alone, before a byte of the body is read."""
    if declared is None:
        return
    if not declared.isdigit():
        raise Rejection(400, "invalid Content-Length")
    if int(declared) > limit:
        raise too_large(limit)


def discard_bound(limit: int) -> int:
    """Bytes of a refused body read and dropped after the answer (see :meth:`BodyReader.discard`):
    every body GitLab sends (it caps them at 25 MB), twice the limit if that is more."""
    return max(DISCARD_BYTES, 2 * limit)


class BodyReader:
    """Reads a request's body as far as needed, never more than ``limit`` bytes (a 413 as soon
    as more arrived). ``complete`` says whether all of it was read; :meth:`discard` drops the
    rest of a refused one, so that the client reads its answer rather than a connection reset."""

    def __init__(self, request: Request, limit: int) -> None:
        self._declared = request.headers.get("content-length")
        # A client that waits for "100 Continue" sends no body unless it is asked for it.
        self._waits_for_continue = request.headers.get("expect", "").lower() == "100-continue"
        self._stream = request.stream()
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._asked = False
        self.complete = False

    def check_declared_size(self) -> None:
        """A 413 on the Content-Length header alone (a 400 for an invalid one)."""
        check_declared_size(self._declared, self._limit)

    async def _next(self) -> bytes | None:
        self._asked = True
        try:
            return await anext(self._stream)
        except StopAsyncIteration:
            self.complete = True
            return None

    async def _more(self) -> bool:
        chunk = await self._next()
        if chunk is None:
            return False
        self._size += len(chunk)
        self._chunks.append(chunk)
        return True

    async def project(self) -> str | None:
        """The project the body names (:func:`find_project`) in its first
        :data:`PROJECT_WITHIN` bytes, where GitLab and the local hook put it, before commits.

        No 413 here, whatever the limit: the token is checked first (one chunk past
        PROJECT_WITHIN is read at most)."""
        while True:
            found = find_project(b"".join(self._chunks)[:PROJECT_WITHIN])
            if found is not None or self._size >= PROJECT_WITHIN or not await self._more():
                return found

    async def read(self) -> bytes:
        """The whole body; a 413 as soon as more than the limit arrived."""
        while self._size <= self._limit and not self.complete:
            await self._more()
        if self._size > self._limit:
            raise too_large(self._limit)
        return b"".join(self._chunks)

    async def discard(self, *, up_to: int, within_s: float) -> bool:
        """Read the rest of the body and drop it, as long as the body stays within ``up_to``
        bytes and ``within_s`` seconds; whether all of it was read.

        Call it once the answer is sent (for a refused body). A server that closes a
        connection with part of the body unread makes the kernel reset it, and the client
        loses the answer it has not read yet: a client that writes its whole body before it
        reads (GitLab does) would see a reset, not the 401 or 413, and GitLab counts that as
        a failed delivery (it disables a hook after four)."""
        declared_ok = self._declared is None or (
            self._declared.isdigit() and int(self._declared) <= up_to
        )
        if self.complete or not declared_ok or (self._waits_for_continue and not self._asked):
            return self.complete
        self._chunks.clear()
        with anyio.move_on_after(within_s):
            try:
                while (chunk := await self._next()) is not None:
                    self._size += len(chunk)
                    if self._size > up_to:
                        break
            except ClientDisconnect:
                pass
        return self.complete


def project_of_path(path: str) -> str:
    """``group/sub/name`` (GitLab's path_with_namespace) → ``name``, as Nakama names projects."""
    return path.rsplit("/", 1)[-1].lower()


def find_project(body: bytes) -> str | None:
    """The project a raw push hook body names, found without parsing it; None if there is none.

    Only says whose token to check: once the token matched, the parsed body must name the
    same project (see :func:`project_name`)."""
    found = _PROJECT_PATH.search(body)
    if found is None:
        return None
    return project_of_path(found.group(1).decode(errors="replace"))


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``body`` (``{}`` is 1, ``[[]]`` 2).

    Brackets inside strings do not count: escaped backslashes and quotes are dropped, then every
    other quote opens or closes a string. Each step is one pass of a C loop over the bytes (about
    25 ms for a MiB of brackets). For a body that is not JSON the number means nothing; the parse
    then says what is wrong."""
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(text.split(b'"')[::2])
    signs = outside_strings.translate(_SIGNS, _NOT_BRACKET)
    return max(itertools.accumulate(memoryview(signs).cast("b")), default=0)


def _too_deep(limit: int) -> Rejection:
    return Rejection(400, f"body nests deeper than {limit} levels, the limit of {DEPTH_SETTING}")


def parse_object(body: bytes, *, max_depth: int) -> dict[str, Any]:
    """Parse ``body`` as a JSON object of at most ``max_depth`` levels; a 400 or 422 otherwise.

    CPU-bound: call it in a worker thread, not on the event loop."""
    # A body with fewer brackets than the limit cannot nest deeper: most hooks stop here.
    if body.count(b"[") + body.count(b"{") > max_depth and json_depth(body) > max_depth:
        raise _too_deep(max_depth)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejection(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:  # the scan is fooled only by bodies that are not JSON; still a 400
        raise _too_deep(max_depth) from None
    if not isinstance(data, dict):
        raise Rejection(422, "body must be a JSON object")
    return data


def project_name(data: dict[str, Any]) -> str:
    """The project a parsed push hook body names."""
    project = data.get("project")
    if not isinstance(project, dict):
        raise Rejection(422, "body has no 'project' object")
    path = project.get("path_with_namespace") or project.get("name")
    if not isinstance(path, str) or not path:
        raise Rejection(422, "body has no project.path_with_namespace")
    return project_of_path(path)
