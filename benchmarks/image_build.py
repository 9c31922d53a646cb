"""Cluster-mode image builds: the layer builder against buildah, for the same app in the same run.

What is measured: a throw-away docker-registry (Basic auth, on loopback) behind a byte-counting
TCP proxy, and one base image pushed to it, made from this machine's Python: its whole standard
library (no tests, no site-packages), pip (from ensurepip), ``/bin/sh`` and the CA bundle, so that
the generated Dockerfile's ``RUN pip install uv && uv pip install --system ...`` can run under
buildah (vfs, chroot isolation, as root here: the privileges a runner would have to grant) and
the layer builder can use the same base. For each of ``--runs`` rounds, ``nakama build`` builds
the app (``--requirements``, default ``pandas==2.2.3``) once with ``--builder layer`` and once with
``--builder buildah``, in alternating order, each into a fresh repository, both downloading the
packages from the index (no warm uv cache on either side). Per build: wall time of ``nakama
build`` (checkout to pushed), bytes sent to the registry (request bodies and headers through the
proxy, so mounts count as nothing), and the app image's layers and their compressed size.

Run: ``python benchmarks/image_build.py [--runs 2] [--requirements 'pandas==2.2.3']`` (as root,
with buildah and docker-registry installed; it needs the package index).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from uv import find_uv_bin

from benchmarks._harness import GIT_ENV, fmt_stats, machine_note
from image_builder.build import build_main
from nakama.clients.oci import OciClient
from tests.registry import (
    PASSWORD,
    USERNAME,
    Registry,
    buildah_env,
    push_rootfs_image,
    python_rootfs,
    registry_server,
)

# The layer builder's own timings in its log.
_PHASES = {
    "install": r"environment: installed in ([0-9.]+) s",
    "compile": r"environment: byte-compiled in ([0-9.]+) s",
    "write": r"layer: sha256:\S+ \(.*, ([0-9.]+) s\)",
}
_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__", "lib2to3"}


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes clients send through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(1 << 16):
                    if count:
                        self.sent += len(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


def full_python_rootfs(rootfs: Path) -> dict[str, str]:
    """This machine's Python with its whole standard library, pip, /bin/sh and CA certificates."""
    python = os.path.realpath(sys.executable)
    env = python_rootfs(rootfs, python=python, imports=("ssl", "sqlite3", "ctypes", "lzma"))
    prefix = Path(sys.base_prefix)
    lib = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    for path in lib.rglob("*"):
        parts = set(path.relative_to(lib).parts)
        if parts & _SKIP or not path.is_file():
            continue
        target = rootfs / path.relative_to("/")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    libraries: set[str] = set()
    for so in (rootfs / lib.relative_to("/") / "lib-dynload").glob("*.so"):
        out = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
        libraries |= {p.split()[2] for p in out.splitlines() if "=>" in p and "/" in p}
    shell = Path(os.path.realpath("/bin/sh"))
    out = subprocess.run(["ldd", str(shell)], capture_output=True, text=True).stdout
    libraries |= {p.split()[2] for p in out.splitlines() if "=>" in p and "/" in p}
    # What manylinux wheels and uv's binary link against, as a python:slim image has it.
    libraries |= {"/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libstdc++.so.6"}
    out = subprocess.run(["ldd", find_uv_bin()], capture_output=True, text=True).stdout
    libraries |= {p.split()[2] for p in out.splitlines() if "=>" in p and "/" in p}
    for name in [*libraries, str(shell), "/etc/ssl/certs/ca-certificates.crt"]:
        target = rootfs / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(name), target)
    (rootfs / "bin").mkdir(exist_ok=True)
    if not (rootfs / "bin" / "sh").exists():
        (rootfs / "bin" / "sh").symlink_to(str(shell))
    # pip from the wheel the standard library bundles (no index), into the image's prefix.
    [wheel] = (lib / "ensurepip" / "_bundled").glob("pip-*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "--isolated", "--root", str(rootfs), "--ignore-installed",
         "--no-deps", "--no-index", "--no-warn-script-location", "--root-user-action=ignore",
         "-q", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    certificates = "/etc/ssl/certs/ca-certificates.crt"
    return {**env, "SSL_CERT_FILE": certificates, "PIP_CERT": certificates}


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()  # fmt: skip


def app_repo(root: Path, requirements: str) -> tuple[Path, str]:
    work, bare = root / "work", root / "app.git"
    work.mkdir(parents=True)
    _git("init", "-q", "--initial-branch=main", str(work), cwd=root)
    _git("init", "-q", "--bare", str(bare), cwd=root)
    (work / "app.py").write_text("import pandas\nprint(pandas.__version__)\n")
    (work / "requirements.txt").write_text(requirements.replace(";", "\n") + "\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-qm", "app", cwd=work)
    _git("push", "-q", str(bare), "HEAD:main", cwd=work)
    return bare, _git("rev-parse", "HEAD", cwd=work)


def build_once(
    builder: str, *, bare: Path, sha: str, host: str, base: str, root: Path, proxy: CountingProxy,
    registry: Registry, repository: str,
) -> dict[str, float]:  # fmt: skip
    password = root / "password"
    password.write_text(PASSWORD)
    before = proxy.sent
    out = io.StringIO()
    start = time.perf_counter()
    code = build_main(
        [
            "--repo", str(bare), "--commit", sha, "--image", f"{host}/{repository}",
            "--registry-username", USERNAME, "--registry-password-file", str(password),
            "--no-tls-verify", "--base-image", base, "--builder", builder,
            "--workdir", str(root / f"work-{repository.rsplit('/', 1)[-1]}"),
        ],
        out=out,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{builder} build failed ({code}):\n{out.getvalue()[-3000:]}")
    sent = proxy.sent - before
    log = out.getvalue()
    phases = {
        name: float(match.group(1))
        for name, pattern in _PHASES.items()
        if (match := re.search(pattern, log)) is not None
    }
    with OciClient(registry.url, username=USERNAME, password=PASSWORD) as client:
        [tag] = client.list_tags(repository)
        layers = client.get_manifest(repository, tag)["layers"]
    return {
        "seconds": elapsed,
        "sent": float(sent),
        "layers": float(len(layers)),
        "app_layer": float(layers[-1]["size"]),
        "image": float(sum(layer["size"] for layer in layers)),
        **phases,
    }


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="nakama-bench-image-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="rounds (each builds both ways)")
    parser.add_argument("--requirements", default="pandas==2.2.3",
                        help="the app's requirements.txt, lines separated by ';'")  # fmt: skip
    args = parser.parse_args()
    print(machine_note())
    with scratch() as root:
        storage = buildah_env(root / "buildah")
        os.environ.update(storage)
        with (
            registry_server(root / "registry", with_auth=True) as registry,
            CountingProxy(int(registry.host.rsplit(":", 1)[1])) as proxy,
        ):
            host = f"127.0.0.1:{proxy.port}"
            rootfs = root / "base"
            rootfs.mkdir()
            env = full_python_rootfs(rootfs)
            push_rootfs_image(registry, "nakama/python", "3.11", rootfs, env=env)
            base = f"{host}/nakama/python:3.11"
            bare, sha = app_repo(root / "app", args.requirements)
            results: dict[str, list[dict[str, float]]] = {"layer": [], "buildah": []}
            for run in range(args.runs):
                order = ("layer", "buildah") if run % 2 == 0 else ("buildah", "layer")
                for builder in order:
                    figures = build_once(
                        builder, bare=bare, sha=sha, host=host, base=base, root=root,
                        proxy=proxy, registry=registry, repository=f"bench/{builder}-{run}",
                    )  # fmt: skip
                    results[builder].append(figures)
                    print(f"run {run + 1} {builder:7} {figures['seconds']:7.1f} s, "
                          f"{figures['sent'] / 1e6:8.1f} MB sent, app layer "
                          f"{figures['app_layer'] / 1e6:7.1f} MB, {int(figures['layers'])} "
                          "layers", flush=True)  # fmt: skip
                    if "install" in figures:
                        print(f"{'':14}uv pip install {figures['install']:.1f} s, byte-compile "
                              f"{figures.get('compile', 0):.1f} s, layer written "
                              f"{figures.get('write', 0):.1f} s", flush=True)  # fmt: skip
                    subprocess.run(["buildah", "rmi", "--all", "--force"], capture_output=True,
                                   check=False)  # fmt: skip
    print(f"\napp: requirements.txt = {args.requirements!r}; {args.runs} run(s) each")
    for builder, rows in results.items():
        print(f"{builder:8} wall {fmt_stats([r['seconds'] for r in rows])}")
        sent = [r["sent"] / 1e6 for r in rows]
        print(f"{'':8} sent {fmt_stats(sent, unit=' MB', digits=1)}; image "
              f"{rows[0]['image'] / 1e6:.1f} MB in {int(rows[0]['layers'])} layers, app layer "
              f"{rows[0]['app_layer'] / 1e6:.1f} MB")  # fmt: skip
    print("(the layer builder's app layer holds the environment's .pyc files, byte-compiled at "
          "build time for a read-only root; the generated Dockerfile writes none)")  # fmt: skip
    median = {b: statistics.median(r["seconds"] for r in rows) for b, rows in results.items()}
    sent_mb = {b: statistics.median(r["sent"] for r in rows) / 1e6 for b, rows in results.items()}
    print(f"RESULT image_build layer_median={median['layer']:.1f}s "
          f"buildah_median={median['buildah']:.1f}s layer_sent={sent_mb['layer']:.1f}MB "
          f"buildah_sent={sent_mb['buildah']:.1f}MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
