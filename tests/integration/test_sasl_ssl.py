"""SASL_SSL on Apache Kafka: a listener with SCRAM-SHA-512 and a certificate from a CA the
test makes. The worker and the CLI work through it with the documented settings; a wrong
password or an untrusted certificate ends a command within seconds with one line naming
the setting; the password shows nowhere: logs, /metrics, API answers.

Kafka only: noida-db has no SASL_SSL listener (docs/kafka.md)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from streams.admin import produce
from streams.broker import BrokerFlavour, KafkaBroker, SaslSslListener
from streams.cli import main
from streams.process import WorkerProcess, settings_env
from streams.settings import Settings
from tests.conftest import TopicReader, free_port, isolated_settings
from tests.integration.helpers import (
    click,
    make_tls,
    recommendations_for,
    start_worker_with_catalog,
)

pytestmark = pytest.mark.integration

PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def secured(
    broker_flavour: BrokerFlavour, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KafkaBroker, Path, Path]]:
    """A Kafka broker with a SASL_SSL listener; (broker, its CA, another CA)."""
    if broker_flavour != "kafka":
        pytest.skip("SASL_SSL runs on Apache Kafka (noida-db has no such listener)")
    directory = tmp_path_factory.mktemp("sasl-ssl")
    ca, keystore = make_tls(directory / "tls")
    stranger, _ = make_tls(directory / "tls", "stranger")
    listener = SaslSslListener(free_port(), {"streamrec": PASSWORD}, keystore)
    broker = KafkaBroker(free_port(), directory / "broker", sasl_ssl=listener)
    broker.start()
    yield broker, ca, stranger
    broker.stop()


def secure_settings(broker: KafkaBroker, ca: Path, data_dir: Path, **overrides: Any) -> Settings:
    assert broker.sasl_ssl is not None
    values: dict[str, Any] = {
        "bootstrap_servers": f"127.0.0.1:{broker.sasl_ssl.port}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "streamrec",
        "sasl_password": PASSWORD,
        "ssl_cafile": ca,
        **overrides,
    }
    return isolated_settings(broker, data_dir, **values, encoders="hashing")


def run_cli(settings: Settings, *args: str, **env: str) -> tuple[int, str, float]:
    started = time.monotonic()
    result = CliRunner().invoke(main, list(args), env={**settings_env(settings), **env})
    return result.exit_code, result.output, time.monotonic() - started


def test_the_worker_and_the_cli_work_over_sasl_ssl_and_never_show_the_password(
    secured: tuple[KafkaBroker, Path, Path], tmp_path
) -> None:
    broker, ca, _ = secured
    settings = secure_settings(broker, ca, tmp_path / "data")
    reader = TopicReader(settings, settings.topic_recommendations)
    worker = start_worker_with_catalog(settings)
    try:
        produce(settings, settings.topic_interactions, [("sam", click("s-1", "sam", "jazz-1"))])
        reader.wait_for(lambda m: recommendations_for(m, "s-1") is not None, timeout_s=120)
        code, output, _ = run_cli(settings, "topics")
        assert code == 0, output
        code, output, _ = run_cli(settings, "recommend", "sam")
        assert code == 0 and output.strip(), output
        base = f"http://{settings.web_host}:{settings.web_port}"
        answers = [
            urllib.request.urlopen(base + path, timeout=10).read().decode()
            for path in (
                "/metrics",
                "/streamrec/stats/",
                "/health/",
                "/ready/",
                "/api/users/sam/recommendations/",
                "/api/items/",
                "/openapi.json",
            )
        ]
    finally:
        worker.stop()
        reader.close()
    logs = "".join(path.read_text(errors="replace") for path in settings.data_dir.rglob("*.log"))
    for text in [*answers, logs, output]:
        assert PASSWORD not in text


@pytest.mark.parametrize(
    "wrong, setting",
    [
        ({"STREAMREC_SASL_PASSWORD": "not-the-password"}, "sasl_password"),
        ("stranger", "ssl_cafile"),
    ],
    ids=["wrong-password", "untrusted-certificate"],
)
def test_a_refused_setting_ends_each_command_in_one_line_naming_it(
    secured: tuple[KafkaBroker, Path, Path], tmp_path, wrong: Any, setting: str
) -> None:
    broker, ca, stranger = secured
    settings = secure_settings(broker, ca, tmp_path / "data")
    env = {"STREAMREC_SSL_CAFILE": str(stranger)} if wrong == "stranger" else wrong
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(click("s-2", "sam", "jazz-2")) + "\n")
    for command in (["topics"], ["recommend", "sam"], ["produce", "interactions", str(events)]):
        code, output, took_s = run_cli(settings, *command, **env)
        assert code == 1, output
        [line] = output.strip().splitlines()  # one line: no traceback
        assert line.startswith("Error: ") and setting in line, line
        assert PASSWORD not in output and "not-the-password" not in output
        # Before: kafka-python retried its bootstrap for 30 s per client, and the topic
        # set-up for 120 s, then said only "Unable to bootstrap".
        assert took_s < 30, f"{command} took {took_s:.0f} s to fail"

    bad = settings.model_copy(
        update={"data_dir": tmp_path / "worker", "ssl_cafile": stranger}
        if wrong == "stranger"
        else {"data_dir": tmp_path / "worker", "sasl_password": SecretStr("not-the-password")}
    )
    worker = WorkerProcess(bad, tmp_path / "worker.log")
    worker.start()
    assert worker._process is not None
    assert worker._process.wait(timeout=120) == 1
    log = worker.log_path.read_text()
    assert "Traceback" not in log and setting in log.strip().splitlines()[-1], log[-2000:]
    assert PASSWORD not in log
