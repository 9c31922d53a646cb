"""Run ``wrk -t2 -c64 --latency`` with a Lua script and parse what it prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

WRK_LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Gitlab-Event"] = "Push Hook"
wrk.headers["X-Gitlab-Token"] = {token}
local next_id = 0
function setup(thread) thread:set("tid", next_id); next_id = next_id + 1 end
function init(args)
  counter = 0
  hdrs = {{}}
  for k, v in pairs(wrk.headers) do hdrs[k] = v end
end
function request()
  counter = counter + 1
  hdrs["Idempotency-Key"] = {prefix} .. tid .. "-" .. counter
  return wrk.format(nil, nil, hdrs)
end
"""


def lua_str(s: str) -> str:
    """A Lua string literal (JSON escapes are Lua escapes for ASCII text; json.dumps is ASCII)."""
    return json.dumps(s)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, lua: Path, *, duration: int) -> dict:
    cmd = ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {text}")
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    dist = re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    lat = {p: _ms(v, u) for p, v, u in dist}
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(m.group(1)) if m else 0,
        "seconds": _ms(m.group(2), m.group(3)) / 1000 if m else float(duration),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50": lat.get("50", float("nan")),
        "p90": lat.get("90", float("nan")),
        "p99": lat.get("99", float("nan")),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "timeouts": int(errors.group(4)) if errors else 0,
        "raw": text,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loaded(pid: int, url: str, lua: Path, duration: int) -> dict:
    """One wrk run against ``url``, with the CPU the server process ``pid`` used meanwhile."""
    before = cpu_seconds(pid)
    r = run_wrk(url, lua, duration=duration)
    r["cpu_s"] = cpu_seconds(pid) - before
    return r
