"""A throwaway PostgreSQL server for tests: Debian's ``initdb`` + ``pg_ctl`` in a temporary directory.

PostgreSQL refuses to run as root, and CI runs as root: there the server runs as ``nobody`` through
``runuser`` (util-linux). It listens on 127.0.0.1 at a free port with its socket in the temporary
directory, trusts local connections (no password) and by default runs with ``fsync=off``: test data only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["find_pg_bin", "postgres_server"]

_DEBIAN_BINS = "/usr/lib/postgresql/*/bin"


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: ``$PG_BIN``, the newest ``/usr/lib/postgresql/<v>/bin``
    (Debian keeps them off ``PATH``) or ``PATH``; None when there is none."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob(_DEBIAN_BINS),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                         reverse=True)
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else "")
    for folder in candidates:
        if folder and all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(bin_dir: Path, database: str = "lightkit", durable: bool = False) -> Iterator[str]:
    """Start a server, create ``database`` and yield its SQLAlchemy URL (``postgresql+psycopg://``).

    ``durable=False`` (tests) runs with ``fsync=off``; ``True`` keeps the default ``fsync=on`` (timings).

    Raises:
        RuntimeError: ``initdb`` or ``pg_ctl start`` failed (their output and the server log attached).
    """
    import psycopg

    # Not under pytest's tmp_path: /tmp/pytest-of-root is mode 0700, which `nobody` cannot enter.
    root = Path(tempfile.mkdtemp(prefix="lightkit-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(root, "nobody")
    data, log = root / "data", root / "server.log"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGTZ": "UTC"}

    def run(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, env=env, cwd=root, timeout=120)
        if proc.returncode != 0:
            server_log = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}\n{server_log}")

    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=50"
        options += "" if durable else " -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        started = True
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                     autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{database}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, env=env, cwd=root, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
