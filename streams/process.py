"""A worker as a child process, for the demo, the integration tests and the benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streams.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        if isinstance(getattr(settings, name), SecretStr):
            value = getattr(settings, name).get_secret_value()
        # Lists and mappings travel as JSON, which pydantic-settings reads back.
        env[f"STREAMREC_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["STREAMREC_BOOTSTRAP_SERVERS"] = settings.effective_bootstrap_servers
    # Explicit servers would read as "Kafka": say what the local broker runs.
    env["STREAMREC_BROKER_FLAVOUR"] = settings.effective_broker_flavour
    return env


class WorkerProcess:
    """``python -m streams worker`` with the given settings; its log goes to ``log_path``;
    ``env``: more environment variables (over the settings')."""

    def __init__(
        self, settings: Settings, log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env={**settings_env(self.settings), **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def get(self, path: str) -> Any:
        """GET one of the worker's JSON views (``/streamrec/stats/``, ``/api/...``)."""
        url = f"http://{self.settings.web_host}:{self.settings.web_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any] | None:
        """The worker's /streamrec/stats/ view, or None while it is not serving."""
        try:
            return self.get("/streamrec/stats/")
        except OSError:
            return None

    def wait_until(self, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Poll the stats view until ``predicate(stats)`` holds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"the worker exited ({self._process.returncode}); see {self.log_path}"
                )
            stats = self.stats()
            if stats is not None and predicate(stats):
                return stats
            time.sleep(0.2)
        raise TimeoutError(f"worker: {what} not reached in {timeout_s:.0f}s; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful stop (SIGTERM: Faust commits offsets and flushes state)."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: no commit, no flush, as in a crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
