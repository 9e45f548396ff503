"""Local Kafka-protocol brokers for tests and local use, one interface (``Broker``):

- ``LocalBroker``: noida-db, embedded (a pip package, no Java), as a child process or a
  background daemon. The default.
- ``KafkaBroker``: Apache Kafka 4.x in KRaft mode (one node, broker and controller), its
  jars resolved from Maven Central by ``deploy/kafka/pom.xml`` into a cache. The broker
  users run; tests run on both (``docs/kafka.md``).
"""

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
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

BrokerFlavour = Literal["noida-db", "kafka"]

#: The pom that names the Kafka version and resolves its jars (kept in the repository).
KAFKA_POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"


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


class Broker(Protocol):
    """What tests and the CLI need of a local broker."""

    flavour: BrokerFlavour

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self, timeout_s: float = ...) -> None: ...

    def stop(self, timeout_s: float = ...) -> None: ...

    def client_settings(self) -> dict[str, Any]:
        """The ``Settings`` values a client of this broker needs (servers, flavour, security)."""
        ...


class LocalBroker:
    """A noida-db Kafka broker on ``127.0.0.1:port`` with its data under ``data_dir``.

    ``start``/``stop`` run it as a child process (tests, demo); ``up``/``down`` as a
    background daemon that outlives the command (``streamrec broker start``).
    """

    host = "127.0.0.1"
    flavour: BrokerFlavour = "noida-db"

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def client_settings(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers, "broker_flavour": self.flavour}

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


# -- Apache Kafka ------------------------------------------------------------------------


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The Kafka version ``deploy/kafka/pom.xml`` resolves."""
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text())
    if not found:
        raise ValueError(f"{pom}: no <kafka.version> property")
    return found.group(1)


def kafka_cache_dir() -> Path:
    """Where resolved Kafka jars are kept between runs (``STREAMREC_KAFKA_CACHE``)."""
    configured = os.environ.get("STREAMREC_KAFKA_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamrec"


def kafka_jars(pom: Path = KAFKA_POM, timeout_s: float = 600.0) -> Path:
    """The folder of Kafka's jars, resolved by Maven on first use and cached after."""
    jars = kafka_cache_dir() / f"kafka-{kafka_version(pom)}" / "jars"
    if jars.is_dir() and any(jars.glob("kafka_2.13-*.jar")):
        return jars
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if not java or not mvn:
        raise FileNotFoundError(
            "the Kafka broker needs Java 17+ and Maven on PATH "
            "(Debian: apt-get install -y maven default-jre-headless)"
        )
    jars.parent.mkdir(parents=True, exist_ok=True)
    # Resolved into a temporary folder and renamed: a half-copied folder is never used.
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=jars.parent))
    subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        check=True,
        timeout=timeout_s,
    )
    try:
        staging.rename(jars)
    except OSError:  # another process was first: use its folder
        shutil.rmtree(staging, ignore_errors=True)
    return jars


@dataclass(frozen=True)
class SaslSslListener:
    """A SASL_SSL listener with SCRAM-SHA-512 users, its TLS key and certificate in PEM.

    ``keystore_pem`` holds the server's private key (PKCS#8, unencrypted) followed by its
    certificate chain: Kafka reads it as ``ssl.keystore.type=PEM``.
    """

    port: int
    users: dict[str, str]
    keystore_pem: Path

    def __repr__(self) -> str:  # the passwords stay out of test reports and logs
        return f"SaslSslListener(port={self.port}, users={sorted(self.users)})"


class KafkaBroker:
    """Apache Kafka in KRaft mode, one node that is broker and controller, on
    ``127.0.0.1:port`` (PLAINTEXT) with its storage under ``data_dir``.

    The storage is formatted once with Kafka's own storage tool (SCRAM users are created
    there too); ``start`` after ``stop`` runs the same node on the same data and ports.
    """

    host = "127.0.0.1"
    flavour: BrokerFlavour = "kafka"
    #: A small heap and a quick JIT: tests start it often and load it little.
    jvm_options = (
        "-Xmx512m",
        "-Xms128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
    )

    def __init__(
        self,
        port: int,
        data_dir: Path,
        controller_port: int | None = None,
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        self.port = port
        self.controller_port = controller_port or _free_port()
        self.data_dir = Path(data_dir)
        self.sasl_ssl = sasl_ssl
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def client_settings(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers, "broker_flavour": self.flavour}

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _properties(self) -> str:
        listeners = [f"PLAINTEXT://{self.host}:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        extra: list[str] = []
        if self.sasl_ssl is not None:
            listeners.append(f"SASL_SSL://{self.host}:{self.sasl_ssl.port}")
            protocols.append("SASL_SSL:SASL_SSL")
            extra = [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={self.sasl_ssl.keystore_pem}",
                "ssl.client.auth=none",
            ]
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
            f"listeners={','.join(listeners)},CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners={','.join(listeners)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={','.join(protocols)}",
            f"log.dirs={self.data_dir / 'logs'}",
            "num.partitions=1",
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Tests start groups often: no wait for more members before the first join.
            "group.initial.rebalance.delay.ms=0",
            *extra,
        ]
        return "\n".join(lines) + "\n"

    def _java(self, jars: Path, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise FileNotFoundError("the Kafka broker needs Java 17+ on PATH")
        log4j = self.data_dir / "log4j.properties"
        return [
            java,
            *self.jvm_options,
            f"-Dlog4j.configuration=file:{log4j}",
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    def _prepare(self, jars: Path) -> Path:
        """Write the configuration; format the storage unless it already is."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(self._properties())
        (self.data_dir / "log4j.properties").write_text(_LOG4J)
        if (self.data_dir / "logs" / "meta.properties").exists():
            return config
        scram = [
            arg
            for name, password in (self.sasl_ssl.users.items() if self.sasl_ssl else [])
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]
        cluster_id = _kafka_cluster_id()
        formatted = subprocess.run(
            self._java(
                jars,
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(config),
                "--cluster-id",
                cluster_id,
                *scram,
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if formatted.returncode != 0:
            # The tool echoes its arguments on errors: keep passwords out of the message.
            said = (formatted.stderr or formatted.stdout).strip().splitlines()
            reason = said[-1] if said else "no output"
            for password in self.sasl_ssl.users.values() if self.sasl_ssl else []:
                reason = reason.replace(password, "***")
            raise RuntimeError(f"kafka storage format failed ({formatted.returncode}): {reason}")
        return config

    def start(self, timeout_s: float = 90.0) -> None:
        for port in (self.port, self.controller_port):
            if port_is_open(self.host, port):
                raise RuntimeError(f"port {port} is taken: stop what runs there")
        jars = kafka_jars()
        config = self._prepare(jars)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self._java(jars, "kafka.Kafka", str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_until_serving(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self, timeout_s: float) -> None:
        """Until a metadata request names this broker (the port opens before that)."""
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"the Kafka broker exited ({self._process.returncode}): see {self.log_file}"
                )
            if port_is_open(self.host, self.port):
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
                    )
                    try:
                        if admin.describe_cluster().get("brokers"):
                            return
                    finally:
                        admin.close()
                except Exception:  # not answering yet
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Kafka broker did not answer within {timeout_s:.0f}s: see {self.log_file}"
                )
            time.sleep(0.3)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL; returns once the process is gone."""
        if self._process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, sig)
            try:
                self._process.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self._process = None

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    def up(self, timeout_s: float = 90.0) -> None:
        """Start it in the background, to outlive this process (``streamrec broker start``)."""
        if port_is_open(self.host, self.port):
            return
        self.start(timeout_s)
        assert self._process is not None
        self._pid_file.write_text(str(self._process.pid))
        self._process = None  # not ours to stop when this process ends

    def down(self, timeout_s: float = 30.0) -> None:
        """Stop the background broker ``up`` started (its data stays).

        ``NoRecordedBroker``, nothing signalled, if ``kafka.pid`` names no broker of this
        data directory (damaged, or a stale pid now another process's)."""
        if not self._pid_file.exists():
            return
        pid = self._recorded_broker()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            raise NoRecordedBroker(
                f"{self._pid_file} names no Kafka broker of {self.data_dir}: nothing was "
                f"stopped; stop what runs on port {self.port} yourself"
            )
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + timeout_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _alive(pid):
                break
        self._pid_file.unlink(missing_ok=True)

    def _recorded_broker(self) -> int | None:
        """The process group ``up`` recorded, if its leader is still this directory's broker.

        Signalling a group whose id is read from a file is checked first: ``killpg(0)``
        signals the caller's own group, ``killpg(1)`` every process the caller may signal
        (all of them, as root), and a pid left by a broker gone since may be anyone's now."""
        try:
            text = self._pid_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not re.fullmatch(r"[0-9]{1,9}", text):
            return None
        pid = int(text)
        if pid <= 1 or pid in (os.getpid(), os.getpgrp()):
            return None
        try:
            if os.getpgid(pid) != pid:  # up() starts the broker leading its own group
                return None
        except OSError:  # no such process
            return None
        proc = Path(f"/proc/{pid}")
        if not Path("/proc/self").exists():
            return pid  # no /proc to ask (macOS): the checks above are what there is
        config = self.data_dir / "server.properties"
        try:
            arguments = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        for argument in arguments:
            if argument.endswith(b"server.properties"):
                path = Path(os.fsdecode(argument))
                with contextlib.suppress(OSError):
                    if os.path.samefile(
                        path if path.is_absolute() else proc / "cwd" / path, config
                    ):
                        return pid
        return None

    def kill(self) -> None:
        """SIGKILL at once: a crash, not a shutdown."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.state.change.logger=WARN
"""


def _kafka_cluster_id() -> str:
    """A cluster id as Kafka's ``random-uuid`` makes it: 16 random bytes, base64url, never
    starting with "-" (Kafka's ``Uuid.randomUuid`` rejects those too: the storage tool would
    read such an id as an option and refuse to format, one start in 64)."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, now reaped
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NoRecordedBroker(RuntimeError):
    """``kafka.pid`` names no broker of the data directory: nothing was stopped."""


def make_broker(flavour: BrokerFlavour, port: int, data_dir: Path) -> LocalBroker | KafkaBroker:
    """The local broker of a flavour (``local_broker`` setting), its data in a folder of its
    own under the app's ``data_dir``."""
    if flavour == "kafka":
        return KafkaBroker(port, data_dir / "kafka")
    return LocalBroker(port, data_dir / "broker")
