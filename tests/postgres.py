"""A throwaway PostgreSQL cluster for the tests: started in a temp dir when the server binaries
exist (`/usr/lib/postgresql/<version>/bin` or $PERSONARAG_PG_BIN), skipped cleanly otherwise.

initdb refuses to run as root: as root the cluster belongs to the `postgres` user and the
commands run through `su postgres`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def pg_bin() -> Path | None:
    env = os.environ.get("PERSONARAG_PG_BIN")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def unavailable() -> str | None:
    """Why no throwaway cluster can start here, or None when one can."""
    if pg_bin() is None:
        return "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or $PERSONARAG_PG_BIN)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to own the cluster (initdb refuses root)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: str, as_postgres: bool) -> None:
    argv = ["su", "postgres", "-c", command] if as_postgres else ["bash", "-c", command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} failed ({done.returncode}): {done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yields a server URL without a database (`postgresql://pg@127.0.0.1:PORT`); stops and removes it after."""
    binaries = pg_bin()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="personarag-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    q = shlex.quote
    data, log = root / "data", root / "log"
    started = False
    try:
        _run(f"{q(str(binaries / 'initdb'))} -D {q(str(data))} -A trust -U pg >/dev/null", as_postgres)
        options = f"-k {root} -p {port} -h 127.0.0.1 -c fsync=off"
        _run(f"{q(str(binaries / 'pg_ctl'))} -D {q(str(data))} -o {q(options)} -l {q(str(log))} -w start", as_postgres)
        started = True
        yield f"postgresql://pg@127.0.0.1:{port}"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run(f"{q(str(binaries / 'pg_ctl'))} -D {q(str(data))} -m immediate -w stop", as_postgres)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, icu_locale: str | None = "en-US") -> str:
    """A fresh, empty database on the cluster; its URL. By default it sorts text like most real
    servers do (an ICU en-US collation, where 'B' < 'Zed' < 'a' does not hold), not bytewise
    like the bare cluster's C locale; without ICU support it falls back to the cluster default."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    icu = (f" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
           if icu_locale else "")
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
                try:
                    conn.execute(f'CREATE DATABASE "{name}"{icu}')
                except psycopg.errors.FeatureNotSupported:
                    conn.execute(f'CREATE DATABASE "{name}"')
            return f"{server_url}/{name}"
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
