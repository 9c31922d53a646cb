"""The smallest ASGI app that answers every GET with the bytes of one file: the baseline of
``api_scale.py``, so that a Nakama answer is compared with a bare uvicorn sending an answer of the
same size, with the same ``uvicorn.run`` settings as ``nakama up``:
``python benchmarks/_bare_static.py PORT FILE CONTENT_TYPE``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import uvicorn

BODY = Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else b"{}"
TYPE = (sys.argv[3] if len(sys.argv) > 3 else "application/json").encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", TYPE), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
