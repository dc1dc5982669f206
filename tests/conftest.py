"""Shared fixtures: a hand-moved clock, a Cache on it, a private process default, and real
redis-servers (a session server and a one-node Redis Cluster)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import llm_memo


def run_python(code: str, *args: str, bound_by_permissions: bool = False) -> str:
    """Run ``code`` in a child interpreter (warnings as errors) and return its stdout.

    With ``bound_by_permissions``, file permissions bind the child even when we are root.
    """
    command = [sys.executable, "-W", "error", "-c", textwrap.dedent(code), *args]
    if bound_by_permissions and os.geteuid() == 0:  # root ignores chmod: drop what lets it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv, so chmod 0500 cannot stop writes")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    if result.returncode and result.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop root's file capabilities here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return result.stdout


class FakeClock:
    """Epoch seconds that move only when a test calls advance()."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> Iterator[llm_memo.Cache]:
    with llm_memo.Cache(tmp_path / "cache", clock=clock) as c:
        yield c


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path_factory: pytest.TempPathFactory,
                           monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches ~/.cache: the default cache lives in a fresh temporary directory."""
    directory = tmp_path_factory.mktemp("default-cache")
    monkeypatch.setenv("LLM_MEMO_DIR", str(directory))
    monkeypatch.delenv("LLM_MEMO_DISABLE", raising=False)
    monkeypatch.delenv("LLM_MEMO_REDIS_URL", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)  # CLI tables fit a width only where a test asks for one
    llm_memo.configure(directory, enabled=True)
    yield
    # Close this test's default; what stays behind holds no files.
    llm_memo.configure(enabled=True, disk=False)


# -- real redis-servers ---------------------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server")
_prefixes = itertools.count()


def fresh_prefix() -> str:
    return f"test-{os.getpid()}-{next(_prefixes)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_server() -> str:
    """The redis-server binary. A Redis test never skips: without it, it fails with the fix."""
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not on PATH: install it with `bash .ci/system-deps`", pytrace=False)
    return REDIS_SERVER


class Server:
    """A redis-server child on 127.0.0.1, on a free port, with its files in ``directory``."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.directory = directory
        self.options = options
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, port: int | None = None) -> Server:
        binary = require_redis_server()
        for _ in range(1 if port else 5):  # a free port may be taken before redis binds it
            self.port = port or free_port()
            command = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                       "--appendonly", "no", "--dir", str(self.directory), *self.options]
            with open(self.directory / "redis.log", "ab") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            if self._ready():
                return self
            self.kill()
        raise RuntimeError(f"redis-server did not start: {(self.directory / 'redis.log').read_text()[-2000:]}")

    def _ready(self) -> bool:
        assert self.process is not None
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            for _ in range(200):
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return True
                time.sleep(0.025)
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL (a stopped server too) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A one-node Redis Cluster owning every slot: RedisCluster's code paths, for real."""
    directory = tmp_path_factory.mktemp("redis-cluster")
    server = Server(directory, "--cluster-enabled", "yes",
                    "--cluster-config-file", str(directory / "nodes.conf")).start()
    try:
        with contextlib.closing(server.client()) as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
            for _ in range(400):
                if client.cluster("info").get("cluster_state") == "ok":
                    break
                time.sleep(0.025)
            else:
                raise RuntimeError("the one-node cluster never reached cluster_state:ok")
        yield server
    finally:
        server.kill()
