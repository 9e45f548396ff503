"""The ``streamrec`` command line: broker, worker, produce, recommend, evaluate, demo."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.events import ItemUpload, Recommendations, json_depth
from streams.settings import Settings

if TYPE_CHECKING:  # imported where used: the CLI starts without the models' imports
    from models.evaluation.fusion_refits import FusionRefits
    from models.sources import Catalog, ContentSimilarity
    from streams.replay import EncodedCatalog


def _settings() -> Settings:
    from pydantic import ValidationError

    from streams.events import describe_validation_error

    try:
        return Settings()
    except Exception as error:  # pydantic names the field; say where settings come from
        # One line: each problem's setting and message, without pydantic's links.
        why = describe_validation_error(error) if isinstance(error, ValidationError) else error
        raise click.ClickException(
            f"invalid settings (STREAMREC_* variables or the STREAMREC_CONFIG file): {why}"
        ) from error


class _Commands(click.Group):
    """Settings the broker refuses (a wrong password, an untrusted certificate) or topics
    that do not match them end a command with one line that names the setting to fix."""

    def invoke(self, ctx: click.Context) -> Any:
        from streams.admin import TopicLayoutError
        from streams.connection import BrokerConnectionError

        try:
            return super().invoke(ctx)
        except (BrokerConnectionError, TopicLayoutError) as error:
            raise click.ClickException(str(error)) from None


def _kafka_settings() -> Settings:
    """The settings, checked against the broker (streams/connection.py)."""
    from streams.connection import BrokerConnectionError, check_connection

    settings = _settings()
    try:
        check_connection(settings, timeout_s=5.0)
    except BrokerConnectionError as error:
        if not error.retriable:
            raise
        fix = (
            "start it with `streamrec broker start` (or `streamrec worker`)"
            if settings.uses_local_broker
            else "check -b/--bootstrap-servers (STREAMREC_BOOTSTRAP_SERVERS) and the cluster"
        )
        raise BrokerConnectionError(f"{error}: {fix}", retriable=True) from None
    return settings


def _environment_help() -> str:
    """The settings as environment variables, for ``--help`` (generated, never stale)."""
    names = ", ".join(f"STREAMREC_{name.upper()}" for name in Settings.model_fields)
    return (
        "\b\nSettings come from STREAMREC_* environment variables, then the TOML file named "
        "by --config (or STREAMREC_CONFIG); see deploy/streamrec.example.toml. Variables:\n\n"
        + names
    )


@click.group(cls=_Commands, epilog=_environment_help())
@click.version_option(package_name="streamrec", prog_name="streamrec")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML settings file (sets STREAMREC_CONFIG; variables still win)",
)
@click.option(
    "-b",
    "--bootstrap-servers",
    metavar="HOST:PORT[,...]",
    help="Kafka cluster to use (sets STREAMREC_BOOTSTRAP_SERVERS; default: the local broker)",
)
def main(config: str | None, bootstrap_servers: str | None) -> None:
    """streamrec: a streaming, multimodal recommender on Kafka and Qdrant."""
    # Through the environment, so that Settings() everywhere, and the worker processes
    # the CLI starts, see the same choice.
    if config:
        os.environ["STREAMREC_CONFIG"] = str(Path(config).resolve())
    if bootstrap_servers:
        os.environ["STREAMREC_BOOTSTRAP_SERVERS"] = bootstrap_servers


# -- broker ------------------------------------------------------------------------------


@main.group()
def broker() -> None:
    """The local broker, noida-db or Kafka (``local_broker``; used when no bootstrap servers
    are configured)."""


def _local_broker(settings: Settings) -> Any:
    from streams.broker import make_broker

    return make_broker(settings.local_broker, settings.local_broker_port, settings.data_dir)


@broker.command("start")
def broker_start() -> None:
    """Start the local broker in the background."""
    settings = _settings()
    _local_broker(settings).up()
    click.echo(f"local broker on {settings.effective_bootstrap_servers}")


@broker.command("stop")
def broker_stop() -> None:
    """Stop the background local broker (its data stays under the data directory)."""
    from streams.broker import port_is_open

    settings = _settings()
    local = _local_broker(settings)
    if not port_is_open(local.host, local.port):
        raise click.ClickException(f"no local broker runs on {local.bootstrap_servers}")
    from streams.broker import NoRecordedBroker

    try:
        local.down()
    except NoRecordedBroker as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"local broker on {local.bootstrap_servers} stopped (data kept in {local.data_dir})")


# -- worker ------------------------------------------------------------------------------


def settings_source() -> str:
    """Where the settings came from, for the worker's first log lines."""
    variables = sorted(
        name for name in os.environ if name.startswith("STREAMREC_") and name != "STREAMREC_CONFIG"
    )
    parts = (
        [f"config file {os.environ['STREAMREC_CONFIG']}"]
        if "STREAMREC_CONFIG" in os.environ
        else []
    )
    parts.append(
        f"{len(variables)} STREAMREC_* variables" if variables else "no STREAMREC_* variables"
    )
    return ", ".join(parts) + ", defaults for the rest"


@main.command()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option("--web-port", type=int, help="HTTP port (sets STREAMREC_WEB_PORT; default 6066)")
def worker(log_level: str, web_port: int | None) -> None:
    """Run the Faust worker: items, interactions and item-updates agents."""
    import faust

    from streams.admin import create_topics, message_limits
    from streams.app import StreamrecApp
    from streams.encoding import build_item_encoder

    if web_port is not None:
        os.environ["STREAMREC_WEB_PORT"] = str(web_port)
    settings = _settings()
    try:
        settings.check_web_exposure()
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    local = f"local {settings.local_broker}"
    broker = local if settings.uses_local_broker else settings.security_protocol
    for line in (
        f"broker: {settings.effective_bootstrap_servers} ({broker}), "
        f"group {settings.consumer_group}",
        f"data: {settings.data_dir.resolve()}"
        + (
            f", Qdrant server {settings.qdrant_url}" if settings.qdrant_url else ", embedded Qdrant"
        ),
        f"dashboard: http://{settings.web_host}:{settings.web_port}/dashboard/",
        f"settings: {settings_source()}",
    ):
        click.echo(f"streamrec {line}", err=True)
    if settings.uses_local_broker:
        _local_broker(settings).up()
    create_topics(settings)
    streamrec = StreamrecApp(
        settings, build_item_encoder(settings), topic_limits=message_limits(settings)
    )
    streamrec.start()
    try:
        faust.Worker(streamrec.app, loglevel=log_level).execute_from_commandline()
    finally:
        streamrec.stop()


@main.command()
def topics() -> None:
    """Create the configured topics with `partitions` and `replication_factor` (item-updates
    is never deleted); refuse existing ones with another partition count: the init step of
    a deployment."""
    from streams.admin import create_topics, topic_names

    settings = _kafka_settings()
    create_topics(settings, timeout_s=120)
    for name in topic_names(settings):
        click.echo(f"{name}: {settings.partitions} partitions")


# -- produce -----------------------------------------------------------------------------

#: A line nested deeper than this is refused: events nest a few levels (an item's metadata
#: at most MAX_METADATA_DEPTH inside it), and JSON's parser and encoder recurse per level.
MAX_RECORD_DEPTH = 64
#: At most this much of a bad value is quoted in an error.
_QUOTED_CHARS = 40


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """JSON lines (``.jsonl``/``.json``, or ``-`` for standard input) or CSV (``.csv``;
    ``tags`` separated by ``|``)."""
    for _line, record in _numbered_records(path):
        yield record


def _source_name(path: Path) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def _numbered_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each record of ``path`` with the line it is on; a line that is not a record is a
    one-line ``ClickException`` naming the file and line."""
    name = _source_name(path)
    text = _read_text(path, name)
    if str(path) != "-" and path.suffix == ".csv":
        yield from _csv_records(text, name)
    else:
        yield from _json_lines(io.StringIO(text, newline=None), name)  # as open() reads text


def _read_text(path: Path, name: str) -> str:
    """The whole of ``path`` (``-``: standard input) as text, decoded strictly as UTF-8."""
    try:
        data = click.get_binary_stream("stdin").read() if str(path) == "-" else path.read_bytes()
    except OSError as error:
        raise click.ClickException(f"{name}: cannot be read ({error.strerror or error})") from None
    data = data.removeprefix(codecs.BOM_UTF8)  # spreadsheets save "UTF-8" CSV with one
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]  # lines end at \n, \r\n or \r, as text mode reads them
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
        raise click.ClickException(
            f"{name}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}): "
            "save the file as UTF-8"
        ) from None


def _csv_records(text: str, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            record: dict[str, Any] = {k: v for k, v in row.items() if v not in ("", None)}
            if "tags" in record:
                record["tags"] = [t for t in record["tags"].split("|") if t]
            if "value" in record:
                try:
                    record["value"] = float(record["value"])
                except ValueError:
                    raise click.ClickException(
                        f"{name}:{reader.line_num}: 'value' is not a number "
                        f"({record['value'][:_QUOTED_CHARS]!r}): write it as one, e.g. 4 or 0.5"
                    ) from None
            yield reader.line_num, record
    except csv.Error as error:  # DictReader.line_num is the last row's; the reader's is this one
        raise click.ClickException(
            f"{name}:{reader.reader.line_num}: not CSV ({error}): write one record per line"
        ) from None


def _json_lines(lines: Iterable[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    deep = f"nests deeper than {MAX_RECORD_DEPTH} levels: flatten it"
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise click.ClickException(
                f"{name}:{number}: not JSON ({error.msg}): write one JSON object per line"
            ) from None
        except ValueError as error:  # an integer over Python's digit limit
            reason = str(error).partition(":")[0]
            raise click.ClickException(
                f"{name}:{number}: a number is too long ({reason}): write it as a string"
            ) from None
        except RecursionError:
            raise click.ClickException(f"{name}:{number}: {deep}") from None
        if not isinstance(record, dict):
            raise click.ClickException(
                f"{name}:{number}: expected a JSON object per line, not {type(record).__name__}"
            )
        if json_depth(record, MAX_RECORD_DEPTH) > MAX_RECORD_DEPTH:
            raise click.ClickException(f"{name}:{number}: {deep}")
        yield number, record


def _message(
    record: dict[str, Any], key_field: str, where: str, max_bytes: int
) -> tuple[str, bytes]:
    """``record`` as the (key, value) ``produce`` sends, or a one-line error when it cannot
    be sent at all; whether it is a valid event is the worker's to judge."""
    if not record.get(key_field):
        raise click.ClickException(
            f"{where}: '{key_field}' is missing: every record needs one (its message key)"
        )
    key = str(record[key_field])
    try:
        key_bytes = key.encode()
    except UnicodeEncodeError:
        raise click.ClickException(
            f"{where}: '{key_field}' is not valid Unicode (a lone surrogate such as \\ud800): "
            "write the id as UTF-8 text"
        ) from None
    value = json.dumps(record).encode()
    if len(key_bytes) + len(value) > max_bytes:
        raise click.ClickException(
            f"{where}: the record is {len(key_bytes) + len(value):,} bytes, over the "
            f"{max_bytes:,} a message may hold: make it smaller (large media by 'uri', not 'data')"
        )
    return key, value


@main.command()
@click.argument("kind", type=click.Choice(["items", "interactions"]))
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
def produce(kind: str, file: Path) -> None:
    """Send a JSON-lines or CSV FILE (``-``: JSON lines from standard input) to the items
    or interactions topic.

    Records are sent as they are (the worker validates and dead-letters bad ones),
    keyed by item_id or user_id. The whole file is read and checked first: a line that
    cannot be sent at all (not UTF-8, not a JSON object, no key) stops it with nothing sent.
    """
    from kafka import KafkaProducer

    from streams.admin import produce as send
    from streams.bounds import RECORD_OVERHEAD_BYTES

    settings = _kafka_settings()
    topic = settings.topic_items if kind == "items" else settings.topic_interactions
    key_field = "item_id" if kind == "items" else "user_id"
    # admin.producer keeps kafka-python's request limit; over it, send() raises mid-file.
    max_bytes = KafkaProducer.DEFAULT_CONFIG["max_request_size"] - RECORD_OVERHEAD_BYTES
    name = _source_name(file)
    records = [
        _message(record, key_field, f"{name}:{line}", max_bytes)
        for line, record in _numbered_records(file)
    ]
    sent = send(settings, topic, records)
    click.echo(f"sent {sent} {kind} to '{topic}' on {settings.effective_bootstrap_servers}")


# -- recommend ---------------------------------------------------------------------------


@main.command()
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="print the message as JSON")
@click.option("-f", "--follow", is_flag=True, help="keep printing each new list (Ctrl-C stops)")
def recommend(user: str, as_json: bool, follow: bool) -> None:
    """Print the latest recommendations for USER from the recommendations topic."""
    from streams.admin import read_topic
    from streams.inspection import tail

    settings = _kafka_settings()
    topic = settings.topic_recommendations

    def show(message: Recommendations) -> None:
        click.echo(
            message.model_dump_json(indent=2) if as_json else format_recommendations(message)
        )

    if not follow:
        latest = None
        for key, value in read_topic(settings, topic):
            if key == user:
                latest = _recommendations_or_skip(value, topic, user) or latest
        if latest is None:
            raise click.ClickException(
                f"no recommendations for {user!r} yet: send an interaction for that user first"
            )
        show(latest)
        return
    # One read: the newest list so far, then each new one (none produced in between lost).
    newest: list[Recommendations] = []
    caught_up = False

    def now_following() -> None:
        nonlocal caught_up
        caught_up = True
        if newest:
            show(newest[-1])
        click.echo(f"following {user!r} on {topic} (Ctrl-C stops) ...", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        for key, value in tail(settings, topic, follow=True, on_caught_up=now_following):
            if key != user:
                continue
            message = _recommendations_or_skip(value, topic, user)
            if message is None:
                continue
            if caught_up:
                show(message)
            else:
                newest[:] = [message]


def _recommendations_or_skip(value: bytes | None, topic: str, user: str) -> Recommendations | None:
    """The list a record of the recommendations topic holds, or None after one line on
    stderr saying it was skipped (not JSON, the wrong shape, a tombstone, too deep)."""
    from pydantic import ValidationError

    from streams.inspection import printable

    if value is None:
        why = "an empty record"
    else:
        try:
            return Recommendations.model_validate_json(value)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"])
            why = f"not a recommendations list ({problem['msg']}{' at ' + where if where else ''})"
        except (ValueError, TypeError, RecursionError) as error:
            why = f"not a recommendations list ({type(error).__name__}: {error})"
    click.echo(
        f"skipped a record for {printable(repr(user), 80)} on {topic}: {printable(why, 200)}",
        err=True,
    )
    return None


# -- operations --------------------------------------------------------------------------


@main.command("dead-letters")
@click.option("-n", "--last", default=20, show_default=True, help="how many per partition")
@click.option("-f", "--follow", is_flag=True, help="keep printing new ones (Ctrl-C stops)")
@click.option("--json", "as_json", is_flag=True, help="print each dead letter as JSON")
def dead_letters(last: int, follow: bool, as_json: bool) -> None:
    """Show records the worker refused: where they came from and why."""
    from streams.inspection import dead_letter_json, describe_dead_letter, tail

    settings = _kafka_settings()
    shown = 0
    try:
        for _, value in tail(settings, settings.topic_dead_letters, last=last, follow=follow):
            click.echo(dead_letter_json(value) if as_json else describe_dead_letter(value))
            shown += 1
    except KeyboardInterrupt:
        pass
    except LookupError as error:
        raise click.ClickException(str(error)) from None
    if not shown and not follow:
        click.echo(f"no dead letters on {settings.topic_dead_letters}", err=True)


@main.command()
def status() -> None:
    """Topics, partitions, the worker group's lag per partition, and worker readiness."""
    from streams.inspection import topic_status, worker_readiness

    settings = _kafka_settings()
    click.echo(
        f"broker {settings.effective_bootstrap_servers}, group {settings.consumer_group}\n"
        f"{'topic':<28} {'partition':>9} {'end offset':>11} {'committed':>10} {'lag':>8}"
    )
    total = 0
    for row in topic_status(settings):
        committed = "-" if row.committed is None else f"{row.committed:,}"
        lag = "-" if row.lag is None else f"{row.lag:,}"
        total += row.lag or 0
        click.echo(
            f"{row.topic:<28} {row.partition:>9} {row.end_offset:>11,} {committed:>10} {lag:>8}"
        )
    ready, reason = worker_readiness(settings)
    state = {True: "ready", False: f"not ready ({reason})", None: reason}[ready]
    click.echo(f"lag in total: {total:,}\nworker on port {settings.web_port}: {state}")


def format_recommendations(message: Recommendations, limit: int | None = None) -> str:
    """A list as text for a terminal; every producer-given string goes through
    ``printable``, so escape sequences in a title or an id are shown, not obeyed."""
    from streams.inspection import printable as p

    lines = [
        f"{p(message.user_id)}: after {p(message.trigger_event_id)} "
        f"({message.based_on_events} interactions, {p(message.model_version)})"
    ]
    for rank, item in enumerate(message.items[:limit], start=1):
        why = ", ".join(
            p(r.source) + (f" (like {p(r.because_of)})" if r.because_of else "")
            for r in item.reasons
        )
        lines.append(
            f"  {rank:>2}. {p(item.item_id):<10} {item.score:6.3f}  {p(item.title)}  <- {why}"
        )
    return "\n".join(lines)


# -- demo --------------------------------------------------------------------------------


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that also refuses inf and nan (nan passes any comparison)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _configuration_names(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    """``--only``'s names, each once in the order given; a value naming none (``","``,
    blanks) is a usage error here, before any data is read (the replay raised on it)."""
    if value is None:
        return None
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise click.BadParameter(
            f"{value!r} names no configuration: give one or more, comma-separated, e.g. 'hybrid'"
        )
    return names


def evaluation_options(command: Any) -> Any:
    """Options shared by ``evaluate`` (a dataset file) and ``replay`` (the topics)."""
    options = [
        click.option(
            "-k",
            "--top-k",
            "k",
            type=click.IntRange(min=1),
            default=10,
            show_default=True,
            help="list length K",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="replay only the first N events"),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("reports"),
            show_default=True,
            help="directory for report.json, report.md and the plot",
        ),
        click.option("--no-content", is_flag=True, help="skip the text encoder (no content)"),
        click.option(
            "--only",
            callback=_configuration_names,
            help="comma-separated configurations to run (default: all), e.g. 'hybrid'",
        ),
        click.option(
            "--items",
            "items_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="JSON lines of ItemUpload (text, images, audio), encoded as the worker "
            "does; an item is a candidate from its created_at on",
        ),
        click.option(
            "--cold-threshold",
            type=click.IntRange(min=0),
            default=5,
            show_default=True,
            help="items and users are cold while they have fewer earlier interactions",
        ),
        click.option(
            "--ease-l2",
            type=FiniteFloatRange(min=0, min_open=True),
            default=500.0,
            show_default=True,
            help="lambda of EASE (the source and the baseline)",
        ),
        click.option(
            "--ease-refit-every",
            type=click.IntRange(min=1),
            default=2000,
            show_default=True,
            help="EASE (the source and the baseline) is refitted every this many events",
        ),
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            default=min(len(os.sched_getaffinity(0)), 4),
            show_default="the CPUs this process may use, at most 4",
            help="replay the configurations in groups in this many processes (the same "
            "report; 1: all in this process)",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def writable_directory(path: Path, option: str = "--out") -> Path:
    """``path`` created if need be and checked by writing a file in it, before any long
    work whose results go there; one line naming ``option`` when it cannot be (a path
    under a file, a device, a read-only file system), not a traceback after the work."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise click.ClickException(
            f"{option} {path}: cannot write there ({error.strerror or error}): "
            "give a directory you can create and write to"
        ) from None
    return path


def run_evaluation(
    data: Any,
    k: int,
    limit: int | None,
    out: Path,
    no_content: bool,
    only: Sequence[str] | None,
    cold_threshold: int = 5,
    ease_l2: float = 500.0,
    ease_refit_every: int = 2000,
    items_file: Path | None = None,
    uploads: list[Any] | None = None,
    processes: int = 1,
) -> None:
    """Prequential replay of ``data`` (a Dataset) with the standard configurations; items
    from ``items_file`` or ``uploads`` (ItemUpload, media included) are encoded as the
    worker encodes them, else the dataset's item texts by MiniLM."""
    from tqdm import tqdm

    from models.evaluation.parallel import prequential_in_processes
    from models.evaluation.prequential import prequential, sources_read
    from models.evaluation.report import format_table, write_report
    from models.evaluation.suite import standard_configurations, standard_sources
    from models.sources import Catalog

    writable_directory(out)  # before the replay, not after it
    events = data.events[:limit] if limit else data.events
    vectors = None
    uploaded_at = None
    item_groups = None
    encoded = None
    if items_file is not None or uploads:
        from models.evaluation.datasets import Dataset
        from streams.replay import encode_uploads, read_items_file

        settings = _settings()
        where = str(items_file) if items_file is not None else f"topic {settings.topic_items}"
        if items_file is not None:
            try:
                uploads = read_items_file(items_file)
            except ValueError as error:
                raise click.ClickException(str(error)) from None

        def announce(count: int) -> None:
            click.echo(
                f"encoding the {count:,} items of {where} with the worker's encoders "
                "(cached for next time) ..."
            )

        encoded = encode_uploads(settings, uploads or [], announce)
        if encoded.cached:
            click.echo(f"the items of {where}: encodings read from the cache")
        for item_id, why in encoded.rejected.items():
            click.echo(f"item {item_id} not encoded: {why}")
        data = Dataset(data.name, encoded.items, data.events)
        vectors, uploaded_at = encoded.vectors, encoded.uploaded_at or None
        item_groups = encoded.modality_groups()
    elif data.items and not no_content:
        from encoders.text import MiniLMTextEncoder, compose_item_text
        from encoders.vector_cache import VectorCache

        settings = _settings()
        texts = [compose_item_text(i.title, i.text, i.tags) for i in data.items]

        def encode(texts: Sequence[str]) -> Any:
            click.echo(f"encoding {len(texts):,} item texts with MiniLM (cached for next time) ...")
            return MiniLMTextEncoder(threads=settings.torch_threads).encode(texts)

        vectors = VectorCache(settings.data_dir / "cache").get_or_encode(
            "minilm", texts, encode, MiniLMTextEncoder.dim
        )
    catalog = Catalog()
    modalities = None
    if encoded is not None and encoded.embeddings:
        from encoders.fusion import ModalityProjection
        from models.sources.modality_profiles import ModalityProfiles

        # The worker's projection (seeded: the same matrices), so the same modality vectors.
        projection = ModalityProjection(encoded.dims, common_dim=encoded.dims["text"])
        modalities = ModalityProfiles(dim=projection.common_dim, project=projection.project)
    sources = standard_sources(
        catalog,
        data.items,
        vectors,
        ease_l2,
        ease_refit_every,
        modalities,
        encoded.embeddings if encoded is not None else (),
    )
    configurations = standard_configurations(list(sources))
    if only:
        wanted = list(only)
        unknown = sorted(set(wanted) - set(configurations))
        if unknown:
            needs = {
                "content": "'content' needs item texts and no --no-content",
                "modalities": "'modalities' needs --items",
            }
            why = "".join(f" ({needs[name]})" for name in unknown if name in needs)
            raise click.ClickException(
                f"--only names unknown configurations {unknown}{why}; "
                f"known: {sorted(configurations)}"
            )
        configurations = {name: configurations[name] for name in wanted}
        needed = sources_read(configurations, sources)
        sources = {name: source for name, source in sources.items() if name in needed}
    refits = None
    if encoded is not None and "content" in sources and settings.fusion == "learned":
        refits = _fusion_refits(settings, encoded, catalog, sources["content"])
    click.echo(
        f"replaying {len(events):,} events over {len(catalog):,} items, "
        f"{len(configurations)} configurations, K={k}"
        + (f", in up to {processes} processes" if processes > 1 and refits is None else "")
    )
    options = {
        "k": k,
        "cold_threshold": cold_threshold,
        "uploaded_at": uploaded_at,
        "item_groups": item_groups,
    }
    with tqdm(total=len(events), unit="events", smoothing=0.1) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.update(done - bar.n)

        if refits is None:
            evaluation = prequential_in_processes(
                events, catalog, sources, configurations, processes, progress, **options
            )
        else:  # the fusion's refits change the content source in this process
            evaluation = prequential(
                events,
                catalog,
                sources,
                configurations,
                progress=progress,
                after_event=refits,
                **options,
            )
        bar.update(evaluation.events - bar.n)
    if refits is not None:
        click.echo(f"learned fusion: refitted {refits.refits} times ({refits.fusion.version})")
    if evaluation.interrupted:
        click.echo(f"interrupted after {evaluation.events:,} events: writing a partial report")
    click.echo(format_table(evaluation))
    try:
        paths = write_report(evaluation, data.name, out)
    except OSError as error:  # the disk filled, or the directory went, during the replay
        raise click.ClickException(
            f"--out {out}: the report could not be written ({error.strerror or error}): "
            "free space or give another directory"
        ) from None
    click.echo(
        f"{evaluation.events / max(evaluation.seconds, 1e-9):,.0f} events/s; "
        + ", ".join(str(p) for p in paths.values())
    )


@main.command()
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@evaluation_options
def evaluate(
    dataset: Path,
    k: int,
    limit: int | None,
    out: Path,
    no_content: bool,
    only: Sequence[str] | None,
    **tuning: Any,
) -> None:
    """Prequential evaluation of the hybrid, each source and baselines on DATASET.

    DATASET is an unpacked MovieLens 100k directory, a MovieLens ratings.csv, or a
    JSON-lines file of interactions. Ctrl-C stops early and still writes the report.
    """
    from models.evaluation.datasets import load_dataset

    try:
        data = load_dataset(dataset)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    run_evaluation(data, k, limit, out, no_content, only, **tuning)


def _replay_offsets(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--from-offsets`` checked while the options are read: before the broker is asked."""
    from streams.replay import parse_offsets

    try:
        return parse_offsets(value) if value else {}
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _replay_time(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from streams.replay import parse_time

    try:
        return parse_time(value, param.opts[0]) if value else None
    except ValueError as error:
        raise click.BadParameter(str(error).removeprefix(f"{param.opts[0]}: ")) from None


@main.command()
@click.option(
    "--from-offsets",
    "start_offsets",
    callback=_replay_offsets,
    help="start per partition, e.g. '0:120,1:98' (default: beginning)",
)
@click.option(
    "--from-time",
    "start_time",
    callback=_replay_time,
    help="start at this time (ISO-8601 or epoch seconds)",
)
@click.option(
    "--to-time",
    "end_time",
    callback=_replay_time,
    help="stop before this time (default: the topic's end now)",
)
@evaluation_options
def replay(
    start_offsets: dict[int, int],
    start_time: float | None,
    end_time: float | None,
    k: int,
    limit: int | None,
    out: Path,
    no_content: bool,
    only: Sequence[str] | None,
    **tuning: Any,
) -> None:
    """Prequential evaluation over the interactions topic (items from the items topic,
    encoded with their media as the worker encodes them).

    Reads the selected range of every partition, orders the events by their time, and
    evaluates as ``evaluate`` does.
    """
    from streams.replay import ReplayRange, topic_dataset

    settings = _kafka_settings()
    selection = ReplayRange(start_offsets, start_time, end_time)
    try:
        data, skipped, uploads = topic_dataset(settings, selection)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if skipped:
        click.echo(f"skipped {skipped:,} records that are not valid interactions")
    # The topic's items as the worker encodes them (images and audio included).
    topic_uploads = None if no_content or tuning.get("items_file") else uploads
    run_evaluation(data, k, limit, out, no_content, only, uploads=topic_uploads, **tuning)


@main.command()
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--rate",
    type=FiniteFloatRange(min=0),
    default=20.0,
    show_default=True,
    help="interactions per second; 0: as fast as possible",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="how many interactions to send",
)
@click.option(
    "--upload-items", is_flag=True, help="upload the dataset's items first and wait until stored"
)
@click.option(
    "--items",
    "items_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines of ItemUpload (text, images, audio) to upload, each before the first "
    "interaction at or after its created_at (in 20 stages; see docs/evaluation.md)",
)
@click.option(
    "--evaluate",
    "evaluate_served",
    is_flag=True,
    help="also score every list read back as served, beside the same core in process",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="--evaluate: directory for served.json",
)
def load(
    dataset: Path,
    rate: float,
    limit: int,
    upload_items: bool,
    items_file: Path | None,
    evaluate_served: bool,
    out: Path,
) -> None:
    """Drive a running worker with DATASET's interactions at RATE; print latency as JSON.

    Each interaction is timed from producing it to consuming the recommendations
    message it triggered (p50, p99, max, sustained rate). With --evaluate, each event is
    also scored against the list the worker sent its user after their previous event
    (HitRate, NDCG, MRR at the worker's top_k), and the same events are run through the
    same core in process for comparison: the evaluation through Kafka.
    """
    import uuid

    from models.evaluation.datasets import load_dataset
    from streams.admin import produce as send
    from streams.load import drive
    from streams.process import WorkerProcess

    settings = _kafka_settings()
    try:
        data = load_dataset(dataset)
        # Checked before anything is sent: they are sent, or encoded for the reference.
        uploads = _dataset_uploads(data, dataset) if upload_items or evaluate_served else []
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    if evaluate_served:
        writable_directory(out)  # before anything is sent, not after the run
    worker = WorkerProcess(settings, settings.data_dir / "load.log")
    if upload_items and uploads:
        send(
            settings,
            settings.topic_items,
            [(u.item_id, u.model_dump(mode="json", exclude_none=True)) for u in uploads],
        )
        click.echo(f"uploaded {len(uploads):,} items; waiting for the worker to store them ...")
        worker.wait_until(lambda s: s["items"] >= len(uploads), 1800, "items stored")
    run = uuid.uuid4().hex[:8]
    events: list[dict[str, Any]] = [
        {
            "event_id": f"load-{run}-{n}",
            "user_id": e.user,
            "item_id": e.item,
            "kind": e.kind,
            "value": e.value,
            "ts": e.ts,
        }
        for n, e in enumerate(data.events[:limit])
    ]
    stages: dict[int, list[ItemUpload]] = {}
    if items_file is not None:
        from streams.replay import read_items_file
        from streams.served import upload_stages

        try:
            stages = upload_stages(read_items_file(items_file), events)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    stored = (worker.stats() or {}).get("items", 0) if stages else 0

    def upload_stage(uploads: list[ItemUpload]) -> Callable[[], None]:
        def upload() -> None:
            nonlocal stored
            records = [(u.item_id, u.model_dump(mode="json", exclude_none=True)) for u in uploads]
            send(settings, settings.topic_items, records)
            stored += len(uploads)
            worker.wait_until(lambda s: s["items"] >= stored, 1800, "items stored")

        return upload

    from tqdm import tqdm

    lists: dict[str, list[str]] | None = {} if evaluate_served else None
    click.echo(f"sending {len(events):,} interactions at {rate or 'full'}/s ...", err=True)
    with (
        tqdm(total=len(events), unit="events", desc="sent", file=sys.stderr) as sent,
        tqdm(total=len(events), unit="lists", desc="answered", file=sys.stderr) as answered,
    ):
        figures = drive(
            settings,
            events,
            rate or None,
            timeout_s=120 + len(events) / 10,
            progress=lambda n: sent.update(n - sent.n),
            lists=lists,
            answered=lambda n: answered.update(n - answered.n),
            pause_at={n: upload_stage(uploads) for n, uploads in stages.items()},
        )
    from models.evaluation.report import report_json

    # No list came back (all dead-lettered): its latencies are null, not NaN.
    click.echo(report_json({"bench": "load", "dataset": data.name, **figures}, indent=None))
    if lists is not None:
        _evaluate_served(settings, data, uploads, events, lists, out, stages)
    if figures["dead_lettered"]:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(figures["dead_letter_reasons"].items()))
        click.echo(
            f"{figures['dead_lettered']:,} interactions were dead-lettered ({reasons}): "
            "see `streamrec dead-letters`",
            err=True,
        )
    missing = figures["events_sent"] - figures["recommendations_received"]
    missing -= figures["dead_lettered"]
    if missing:
        raise click.ClickException(
            f"{missing:,} of {figures['events_sent']:,} interactions got no list: "
            "see the worker's log and `streamrec dead-letters`"
        )


def _fusion_refits(
    settings: Settings, encoded: EncodedCatalog, catalog: Catalog, content: ContentSimilarity
) -> FusionRefits:
    """The worker's learned fusion, refitted on its schedule during the replay, its
    vectors the content source's (``models/evaluation/fusion_refits.py``)."""
    from encoders.fusion import ModalityProjection
    from encoders.learned_fusion import LearnedFusion
    from models.evaluation.fusion_refits import FusionRefits

    projection = ModalityProjection(encoded.dims, common_dim=encoded.dims["text"])
    return FusionRefits(
        LearnedFusion(projection),
        {item.item_id: e for item, e in zip(encoded.items, encoded.embeddings, strict=True)},
        catalog,
        content,
        settings.fusion_refresh_pairs,
        settings.fusion_fit_max_pairs,
        settings.fusion_fit_epochs,
    )


def _dataset_uploads(data: Any, dataset: Path) -> list[ItemUpload]:
    """The dataset's items as the uploads the worker is sent (and the reference encodes);
    a ``ValueError`` naming the first item that is no upload (a title past its bound)."""
    from pydantic import ValidationError

    from streams.events import describe_validation_error
    from streams.inspection import printable

    uploads = []
    for item in data.items:
        try:
            uploads.append(
                ItemUpload(
                    item_id=item.item_id, title=item.title, text=item.text, tags=list(item.tags)
                )
            )
        except ValidationError as error:
            problems = describe_validation_error(error).replace("(value): ", "")
            raise ValueError(
                f"{dataset}: item {printable(item.item_id, 80)!r} cannot be uploaded "
                f"({printable(problems, 300)}): fix the item in the dataset"
            ) from None
    return uploads


def _evaluate_served(
    settings: Settings,
    data: Any,
    dataset_uploads: list[ItemUpload],
    events: list[dict[str, Any]],
    lists: dict,
    out: Path,
    stages: dict[int, list[ItemUpload]],
) -> None:
    from tqdm import tqdm

    from streams.replay import read_uploads
    from streams.served import compare_served, encoded_reference, in_process_lists

    staged = {u.item_id for uploads in stages.values() for u in uploads}
    # A file of interactions only: the items are the ones on the items topic (those
    # uploaded in stages are added at the same events as they were to the worker).
    uploads = dataset_uploads or read_uploads(settings)
    uploads = [u for u in uploads if u.item_id not in staged]
    uploads += [u for stage in stages.values() for u in stage]
    click.echo(f"encoding {len(uploads):,} items for the in-process run ...", err=True)
    engine, items = encoded_reference(settings, uploads)
    arrivals = {n: [items[u.item_id] for u in stage] for n, stage in stages.items()}
    for item_id, item in items.items():
        if item_id not in staged:
            item.add_to(engine)
    with tqdm(total=len(events), unit="events", desc="in process", file=sys.stderr) as bar:
        reference = in_process_lists(
            engine, events, settings.top_k, lambda n: bar.update(n - bar.n), arrivals
        )
    report = {
        "dataset": data.name,
        "k": settings.top_k,
        **compare_served(events, lists, reference, settings.top_k),
    }
    k = settings.top_k
    click.echo(f"{'':>14} {'scored':>8} {f'HitRate@{k}':>11} {f'NDCG@{k}':>9} {f'MRR@{k}':>8}")
    for name in ("through_kafka", "in_process"):
        m = report[name]
        click.echo(
            f"{name.replace('_', ' '):>14} {m['events']:>8,} {m[f'hit_rate@{k}']:>11.4f} "
            f"{m[f'ndcg@{k}']:>9.4f} {m[f'mrr@{k}']:>8.4f}"
        )
    zero = report["zero_click"]
    click.echo(
        f"zero-click items ({zero['in_process']['events']:,} events): HitRate@{k} "
        f"{zero['through_kafka'][f'hit_rate@{k}']:.4f} through kafka, "
        f"{zero['in_process'][f'hit_rate@{k}']:.4f} in process"
    )
    click.echo(
        f"lists received {report['lists_received']:,} of {report['events']:,}; "
        f"identical to the in-process run: {report['identical_lists']:.1%} "
        f"(items in common: {report['mean_overlap']:.1%})"
    )
    out.mkdir(parents=True, exist_ok=True)
    from models.evaluation.report import report_json

    (out / "served.json").write_text(report_json(report))
    click.echo(f"wrote {out / 'served.json'}")


def _command_prefix() -> str:
    """How the user can run streamrec again: the bare name only if it is on PATH."""
    import shutil

    found = shutil.which("streamrec")
    here = Path(sys.executable).parent / "streamrec"
    return "streamrec" if found and Path(found).resolve() == here.resolve() else "./deploy/local.sh"


@main.command()
@click.option("--delay", default=0.5, show_default=True, help="seconds between demo clicks")
@click.option(
    "--reset",
    is_flag=True,
    help="start afresh: stop the local broker and delete the data directory first",
)
def demo(delay: float, reset: bool) -> None:
    """Start everything locally, load the demo catalog, click, and show the lists change."""
    import shutil

    from kafka import KafkaConsumer

    from streams.admin import create_topics
    from streams.admin import produce as send
    from streams.broker import port_is_open
    from streams.demo import catalog_uploads, demo_interactions
    from streams.process import WorkerProcess

    settings = _settings()
    run = _command_prefix()
    local = _local_broker(settings) if settings.uses_local_broker else None
    if reset:
        if local is None:
            raise click.ClickException(
                "--reset deletes the local broker's data; with STREAMREC_BOOTSTRAP_SERVERS set, "
                "use other topic names (STREAMREC_TOPIC_*) or a new consumer group instead"
            )
        if port_is_open(local.host, local.port):
            from streams.broker import NoRecordedBroker

            try:
                local.down()
            except NoRecordedBroker as error:
                raise click.ClickException(f"{error}; nothing was deleted") from None
        shutil.rmtree(settings.data_dir, ignore_errors=True)
        click.echo(f"reset: deleted {settings.data_dir} (broker data, users, items)")
    elif (settings.data_dir / "broker").exists():
        click.echo(
            f"continuing the users of earlier demo runs in {settings.data_dir}; "
            f"`{run} demo --reset` starts afresh"
        )
    if local is not None:
        if port_is_open(local.host, local.port):
            click.echo(f"using the local broker already running on {local.bootstrap_servers}")
        else:
            click.echo(f"starting the local broker on {local.bootstrap_servers} ...")
            local.up()
    else:
        from streams.connection import check_connection

        check_connection(settings)
    create_topics(settings)
    worker_process = WorkerProcess(settings, settings.data_dir / "logs" / "worker.log")
    click.echo(f"starting the worker (log: {worker_process.log_path}) ...")
    worker_process.start()
    try:
        worker_process.wait_until(lambda s: True, timeout_s=180, what="web server up")
        catalog = catalog_uploads()
        send(settings, settings.topic_items, catalog)
        click.echo(f"uploaded {len(catalog)} items; encoding ...")
        worker_process.wait_until(lambda s: s["items"] >= len(catalog), 120, "catalog indexed")
        consumer = KafkaConsumer(
            settings.topic_recommendations,
            bootstrap_servers=settings.effective_bootstrap_servers,
            auto_offset_reset="latest",
            group_id=None,
            consumer_timeout_ms=15_000,
            **settings.kafka_client_options(),
        )
        consumer.poll(timeout_ms=1000)  # join before producing, so no list is missed
        clicks = demo_interactions(run_id=str(int(time.time())))
        unanswered = []
        for key, click_event in clicks:
            sent_at = time.perf_counter()
            send(settings, settings.topic_interactions, [(key, click_event)])
            for record in consumer:
                message = Recommendations.model_validate_json(record.value)
                if message.trigger_event_id == click_event["event_id"]:
                    latency_ms = (time.perf_counter() - sent_at) * 1000
                    click.echo(
                        f"\n{click_event['user_id']} {click_event['kind']}s "
                        f"{click_event['item_id']} -> new list in {latency_ms:.0f} ms"
                    )
                    click.echo(format_recommendations(message, limit=5))
                    break
            else:  # the consumer timed out: say so rather than skip the click silently
                unanswered.append(click_event["event_id"])
                click.echo(f"\nno list for {click_event['event_id']} within 15 s", err=True)
            time.sleep(delay)
        consumer.close()
        click.echo(f"\nworker stats: {json.dumps(worker_process.stats())}")
    finally:
        worker_process.stop()
    steps = [
        (
            "worker",
            "keep a worker running; dashboard at "
            f"http://{settings.web_host}:{settings.web_port}/dashboard/",
        ),
        ("recommend alice -f", "alice's list, and each new one"),
        ("produce items examples/items.jsonl", "your own items (then interactions)"),
        ("dead-letters", "records the worker refused, and why"),
        ("status", "topics, lag, worker readiness"),
        *([("broker stop", "stop the local broker")] if local else []),
    ]
    width = max(len(command) for command, _ in steps)
    still = f"; the local broker still runs on {local.bootstrap_servers}" if local else ""
    click.echo(f"\nThe worker has stopped{still}. Next:")
    for command, what in steps:
        click.echo(f"  {run} {command:<{width}}  {what}")
    if unanswered:
        raise click.ClickException(f"{len(unanswered)} demo clicks got no list: {unanswered}")
