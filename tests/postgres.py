"""A real PostgreSQL server on 127.0.0.1 for the tests of a shared Optuna
study: made by initdb in a temporary folder (as the `postgres` user when the
tests run as root: initdb refuses root), started by pg_ctl on a free port,
stopped and removed after. Skipped, saying why, only where no PostgreSQL
binaries exist (`make test` installs Debian's postgresql where it can)."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.initdb, self.pg_ctl = binary("initdb"), binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine: apt-get install postgresql")
        pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'trainer[sweep]'")
        self.root = os.geteuid() == 0
        # Not under pytest's tmp_path: its folders are private to root, and the server runs as postgres.
        self.base = tempfile.mkdtemp(prefix="trainer-pg-")
        if self.root:
            shutil.chown(self.base, "postgres")
        self.data, self.port = os.path.join(self.base, "data"), _free_port()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.root else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    def start(self) -> "Server":
        self._run(self.initdb, "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off"
        self._run(self.pg_ctl, "-D", self.data, "-o", options, "-l", os.path.join(self.base, "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh database: its SQLAlchemy URL (psycopg 3)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    server = Server().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh database on the session's server."""
    return postgres_server.new_database()
