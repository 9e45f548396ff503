"""The local Kafka-protocol broker: noida-db, as a child process or a background daemon."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def noida_db_binary() -> str:
    """The noida-db launcher installed next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "noida-db"
    found = str(beside) if beside.exists() else shutil.which("noida-db")
    if not found:
        raise FileNotFoundError("noida-db is not installed: pip install noida-db (see README)")
    return found


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class LocalBroker:
    """A noida-db Kafka broker on ``127.0.0.1:port`` with its data under ``data_dir``.

    ``start``/``stop`` run it as a child process (tests, demo); ``up``/``down`` as a
    background daemon that outlives the command (``streamrec broker start``).
    """

    host = "127.0.0.1"

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self, verb: str) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            noida_db_binary(),
            verb,
            "--only",
            "kafka",
            "--kafka-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]

    def start(self, timeout_s: float = 30.0) -> None:
        if port_is_open(self.host, self.port):
            raise RuntimeError(
                f"port {self.port} is taken: "
                "stop what runs there or set STREAMREC_LOCAL_BROKER_PORT"
            )
        command = self._command("start")
        with (self.data_dir / "broker.log").open("ab") as log:
            # Its own process group: `noida-db start` runs the broker in a child process,
            # and stopping only the parent would leave the broker serving.
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for_port(self.host, self.port, timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the broker and every process it started; returns once its port is free."""
        if self._process is None:
            return
        group = self._process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            deadline = time.monotonic() + timeout_s
            while port_is_open(self.host, self.port) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not port_is_open(self.host, self.port):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout_s)
        self._process = None

    def up(self, timeout_s: float = 30.0) -> None:
        if not port_is_open(self.host, self.port):
            subprocess.run(self._command("up"), check=True, capture_output=True)
            wait_for_port(self.host, self.port, timeout_s)

    def down(self) -> None:
        subprocess.run(
            [noida_db_binary(), "down", "--data-dir", str(self.data_dir)],
            check=False,
            capture_output=True,
        )

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
