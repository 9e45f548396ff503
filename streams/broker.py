"""The local Kafka-protocol broker: noida-db, as a child process or a background daemon."""

from __future__ import annotations

import shutil
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
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_for_port(self.host, self.port, timeout_s)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
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
