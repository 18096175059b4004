"""What the fault tests need beyond the doubles: a TCP link to the provider that can be cut or made
a black hole (connection refused, connect timeout), a PostgreSQL cluster of the test's own that it
may stop and start, and `backupbot run` as a process of this checkout."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bot.sandbox.slack import SlackDouble, SlackSender
from bot.sandbox.vps import Simulator
from tests.conftest import SIM_TOKEN
from tests.test_cli import _env

PROCESS_SECRET = "process-signing-secret"  # of the bots `BotProcess` starts in tests

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], object], timeout: float = 10.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the provider's link ----------------------------------------------------------------------


class ProviderLink:
    """A TCP relay on loopback in front of the simulator: `url` is the simulator's API through it.

    `refuse()`: nothing listens (a connect fails at once); `black_hole()`: something listens but
    never accepts and its queue is full, so a SYN goes unanswered (a connect times out);
    `restore()`: relaying again on the same port. Cutting closes every relayed connection.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port
        self._upstream = (parts.hostname, parts.port)
        self._path = parts.path
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._port = 0
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self._path}"

    def restore(self) -> None:
        self._close_all()
        listener = self._bind(backlog=64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        self._close_all()

    def black_hole(self) -> None:
        self._close_all()
        listener = self._bind(backlog=0)
        self._listener = listener
        # Fill the accept queue: Linux then drops further SYNs, and a client's connect waits.
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self._port))
            self._keep(filler)
            ready = wait_until(lambda s=filler: _connected(s), timeout=0.3)
            if not ready:
                break

    def close(self) -> None:
        self._close_all()

    def _bind(self, backlog: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                listener.bind(("127.0.0.1", self._port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        listener.listen(backlog)
        self._port = listener.getsockname()[1]
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._keep(client)
            self._keep(upstream)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.append(sock)

    def _close_all(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            opened, self._open = self._open, []
        for sock in [*([listener] if listener else []), *opened]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _connected(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _peer(sock)


def _peer(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# -- a PostgreSQL of the test's own -------------------------------------------------------------

PG_BIN = Path(os.path.realpath(shutil.which("pg_ctl") or "/nonexistent")).parent
HAS_POSTGRES = (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


class OwnPostgres:
    """A throw-away cluster (as .ci/run makes one) that a test may stop and start again."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="backupbot-faults-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._as_pg(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()
        self.database = f"bb_faults_{uuid.uuid4().hex[:8]}"
        self._as_pg(
            str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-q", "-c", f'CREATE DATABASE "{self.database}"',
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._as_pg(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
            "-w", "-t", "60", "start", "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        self._as_pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _as_pg(self, *command: str) -> None:
        # initdb refuses to run as root: the cluster belongs to the postgres user there.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *command], check=True, capture_output=True, timeout=90, cwd=self.root
        )


# -- `backupbot run` as deployed ----------------------------------------------------------------


class BotProcess:
    """`python -m bot run --http` of this checkout on a free port, its log kept, and a sender
    signing requests to it."""

    def __init__(
        self,
        cwd: Path,
        slack: SlackDouble,
        sim: Simulator | str,
        database_url: str,
        secret: str,
        **env: str,
    ) -> None:
        vps_url = sim if isinstance(sim, str) else sim.base_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "--http", "--host", "127.0.0.1", "--port", "0"],
            cwd=cwd,
            env=_env(
                PYTHONPATH=str(ROOT),  # this checkout's bot, not the one installed in the venv
                SLACK_BOT_TOKEN=slack.bot_token,
                SLACK_SIGNING_SECRET=secret,
                SLACK_API_URL=slack.api_url,
                VPS_API_URL=vps_url,
                VPS_API_TOKEN=SIM_TOKEN,
                DATABASE_URL=database_url,
                BACKUP_OPERATORS="U_ALICE",
                BACKUP_APPROVERS="U_BOB,U_CAROL",
                WATCH_POLL_SECONDS="0.2",
                WORKER_LEASE_SECONDS="1",
                **env,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        self.log: list[str] = []
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            self.log.append(line)
            match = re.search(r"/healthz on 127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "the bot did not start:\n" + "".join(self.log)
        self.port = port
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self.url = f"http://127.0.0.1:{port}"
        self.sender = SlackSender(f"{self.url}/slack/events", secret, slack)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:  # so a chatty process never blocks on a full pipe
            self.log.append(line)

    @property
    def log_text(self) -> str:
        return "".join(self.log)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=5)
