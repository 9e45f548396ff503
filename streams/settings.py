"""Settings from environment variables (``STREAMREC_*``) and an optional TOML file.

The file is named by ``STREAMREC_CONFIG``; environment variables win over it, so a
deployment can keep a shared file and override one value per worker. See
``deploy/streamrec.example.toml`` for every key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from models.hybrid import HYBRID_WEIGHTS

CONFIG_FILE_ENV = "STREAMREC_CONFIG"

#: What Kafka accepts as a topic name (``org.apache.kafka.common.internals.Topic``).
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
#: The topics Faust names after the consumer group: the users table's changelog, and its
#: assignor's (``{consumer_group}-__assignor-__leader``, the longest).
CHANGELOG_SUFFIX = "-users-changelog"
#: Upper bounds of the numeric settings: every one has one, far past any deployment's
#: need, because a finite 1e300 passed and failed later, as each use overflowed (a
#: media timeout raised for every fetch; a weight of 1e300 refused every click).
DAY_S, WEEK_S, INT32_MAX = 86_400.0, 604_800.0, 2**31 - 1
#: A source's or a modality's weight: only their ratios matter.
MAX_WEIGHT = 1_000.0
#: A Qdrant collection, also a directory under ``data_dir`` for the embedded store.
COLLECTION_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
LONGEST_INTERNAL_SUFFIX = "-__assignor-__leader"
TOPIC_SETTINGS = (
    "topic_items",
    "topic_interactions",
    "topic_recommendations",
    "topic_item_updates",
    "topic_dead_letters",
)


def is_loopback(host: str) -> bool:
    """Whether a web server bound to ``host`` is reachable from this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything a worker, the CLI and the tools need to know about their environment."""

    # No NaN or infinity anywhere, dict values included: an infinite hybrid weight made
    # every score -inf (or every event non-finite), a NaN one turned its source off.
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="forbid", allow_inf_nan=False)

    # Kafka connection.
    #: ``host:port,host:port`` of your Kafka cluster; unset starts the local broker.
    bootstrap_servers: str | None = None
    #: Port of the local broker (when ``bootstrap_servers`` is unset).
    local_broker_port: int = Field(default=19092, ge=1, le=65535)
    #: The broker started when no bootstrap servers are set: the embedded noida-db (no
    #: Java needed) or Apache Kafka (Java and Maven; docs/kafka.md).
    local_broker: Literal["noida-db", "kafka"] = "noida-db"
    #: What the bootstrap servers run: the compatibility patches noida-db needs are only
    #: installed on it (streams/kafka_compat/). "auto": ``local_broker`` when no bootstrap
    #: servers are set, else Kafka.
    broker_flavour: Literal["auto", "noida-db", "kafka"] = "auto"
    #: Compatibility patches not to install, by name (docs/kafka.md lists them): to see
    #: whether one is still needed after an upgrade of the broker or of the clients.
    kafka_compat_disabled: list[str] = Field(default_factory=list)
    #: How the worker and every command talk to Kafka (docs/kafka.md for SASL_SSL).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: SASL mechanism for ``SASL_*`` protocols.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    #: SASL user name.
    sasl_username: str | None = None
    #: SASL password: a secret, passed to the clients and never printed or logged.
    sasl_password: SecretStr | None = None
    #: CA certificate (PEM) that the broker's certificate must chain to (SSL, SASL_SSL).
    ssl_cafile: Path | None = None
    #: Client certificate (PEM), for brokers that require one.
    ssl_certfile: Path | None = None
    #: The client certificate's private key (PEM).
    ssl_keyfile: Path | None = None

    # Topics and the consumer group.
    #: Item uploads (``ItemUpload``, keyed by item_id).
    topic_items: str = "items"
    #: User interactions (``Interaction``, keyed by user_id).
    topic_interactions: str = "interactions"
    #: The lists the worker sends (``Recommendations``, keyed by user_id).
    topic_recommendations: str = "recommendations"
    #: Internal: encoded items and item-side changes, read whole by every worker; must
    #: never be deleted by retention or compacted (``streamrec topics`` creates it so; an
    #: existing one that would be is refused at start, with the fix).
    topic_item_updates: str = "item-updates"
    #: Records the worker refused, with the reason (``DeadLetter``).
    topic_dead_letters: str = "dead-letters"
    #: Partitions of the topics the worker creates; interactions, item-updates and the
    #: users table must agree, so choose it up front (at most this many workers share
    #: the users).
    partitions: int = Field(default=2, ge=1, le=100_000)
    #: Replication factor of the topics ``streamrec topics`` creates.
    replication_factor: int = Field(default=1, ge=1, le=100)
    #: The Faust app id: the consumer group and the prefix of its internal topics.
    consumer_group: str = "streamrec"
    #: Pause after a fetch that brought nothing, on noida-db only
    #: (streams/kafka_compat/fetch_backoff.py); 0 turns it off.
    empty_fetch_backoff_ms: float = Field(default=5.0, ge=0, le=1_000)
    #: This worker's stable identity in the consumer group (Kafka static membership): a
    #: worker that comes back under the same id takes its partitions back at once, where
    #: a new member would wait for the old one's session to time out. Default: the host
    #: name and the data directory, which no two workers share.
    worker_id: str | None = None
    #: How long the group waits for a silent worker (killed, frozen) before handing its
    #: partitions to the others; heartbeats go out at a third of it (at most every 3 s).
    #: At most Faust's request timeout (90 s), which Faust checks only as the consumer starts.
    consumer_session_timeout_s: float = Field(default=30.0, ge=3.0, le=90.0)
    #: A source partition with records past its committed offset and none delivered for
    #: this long (ready, not rebalancing) is read again from there, and so is a changelog
    #: partition a table recovery still needs (streams/kafka_compat/delivery_watchdog.py).
    delivery_stalled_after_s: float = Field(default=10.0, gt=0, le=DAY_S)
    #: Largest fetch per partition: items with inline media are large messages.
    consumer_max_fetch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=INT32_MAX)
    #: Most records one poll hands to the agents. Bounded so that a poll's records are
    #: processed well within ``consumer_max_poll_interval_s`` even under a backlog.
    consumer_max_poll_records: int = Field(default=500, ge=1, le=1_000_000)
    #: A worker that does not poll for this long is taken for stuck and leaves the group.
    consumer_max_poll_interval_s: float = Field(default=300.0, gt=0, le=DAY_S)
    #: Workers that keep a standby copy of each users-table partition, for a fast
    #: takeover when its worker goes away.
    standby_replicas: int = Field(default=1, ge=0, le=100)
    #: Where a worker keeps the users table: ``memory`` holds every user's entry in RAM
    #: (about 21 KB a user) and reads the table's whole changelog at each start;
    #: ``rocksdb`` keeps them on disk under data_dir (RocksDB, bounded cache) and at a start
    #: reads only the changelog records written since (streams/users_store.py).
    users_store: Literal["memory", "rocksdb"] = "memory"
    #: Events waiting for an agent, at most (back pressure on the fetcher).
    stream_buffer_max_events: int = Field(default=4096, ge=1, le=10_000_000)
    #: Once the item side has caught up, every object alive is kept out of Python's
    #: garbage collections, whose full passes over them stalled clicks for 0.2-0.4 s
    #: (streams/heap.py); off only to measure what it saves.
    freeze_heap_at_ready: bool = True

    # Storage.
    #: Embedded Qdrant shard, Faust's table data, item-side checkpoints, caches and logs.
    data_dir: Path = Path(".streamrec")
    #: A Qdrant server (``http://host:6333``) instead of the embedded engine.
    qdrant_url: str | None = None
    #: The Qdrant server's API key: a secret, never printed.
    qdrant_api_key: SecretStr | None = None
    #: The Qdrant collection of the items.
    collection: str = "items"

    # Recommendation.
    #: Items per list.
    top_k: int = Field(default=10, ge=1, le=1000)
    #: Written into every Recommendations message.
    model_version: str = Field(default="hybrid-2", min_length=1, max_length=100)
    #: The hybrid's sources and weights (a source at 0 or absent is not computed;
    #: models/hybrid.py, measured in docs/evaluation.md). Beside the default four:
    #: "ease" and "modalities" (content compared modality by modality). A change of the
    #: set of sources rebuilds the item side from item-updates at the next start, losing
    #: none of it (docs/reliability.md#restarts-and-crashes).
    hybrid_weights: dict[
        Literal["item-item", "trending", "cf", "content", "ease", "modalities"], float
    ] = Field(default_factory=lambda: dict(HYBRID_WEIGHTS))
    #: "learned": ``hybrid_weights`` are the prior of a blend that learns from the clicks
    #: how much to trust each source per context (models/learned_blend.py); "fixed": as set.
    hybrid_blend: Literal["fixed", "learned"] = "learned"
    #: The "ease" source (EASE fitted from item-item's co-engagement counts; blended only
    #: when ``hybrid_weights`` gives it a weight, with item-item's): its lambda...
    ease_l2: float = Field(default=500.0, gt=0, le=1e9)
    #: ...the most engaged items it covers (its fit inverts a square of this side)...
    ease_max_items: int = Field(default=3_000, ge=1, le=100_000)
    #: ...and how often it is refitted in the background when new engagements came in
    #: (models/sources/item_ease.py, streams/ease_refit.py).
    ease_refit_interval_s: float = Field(default=60.0, gt=0, le=WEEK_S)
    #: A new item's refreshed lists go to at most this many users whose content profile
    #: fits it best, without their click (0: none; streams/new_items.py).
    new_item_push_users: int = Field(default=20, ge=0, le=100_000)
    #: How often the worker looks for newly stored items to push.
    new_item_push_interval_s: float = Field(default=1.0, gt=0, le=DAY_S)
    #: At most this long of each look goes to pushes (the newest items first); items a
    #: bulk upload stores beyond it are not pushed.
    new_item_push_budget_s: float = Field(default=0.1, ge=0, le=60)
    #: A list read over HTTP older than this, or ranked before an item was stored since,
    #: is ranked again at read time (0: always; streams/fresh_lists.py).
    http_list_max_age_s: float = Field(default=60.0, ge=0, le=WEEK_S)
    #: Up to this many items every list ranks the whole catalog; above, it ranks the
    #: candidates retrieved per source (models/candidates.py): Qdrant queries on the
    #: user's content profile and CF factor, co-engaged and trending items.
    dense_ranking_max_items: int = Field(default=20_000, ge=0, le=100_000_000)
    #: Candidates each source retrieves above ``dense_ranking_max_items``.
    candidates_per_source: int = Field(default=200, ge=1, le=100_000)
    #: How often changed CF item vectors are written to Qdrant (the "cf" named vector).
    cf_publish_interval_s: float = Field(default=1.0, gt=0, le=DAY_S)
    #: The embedded Qdrant builds its HNSW index in another process once this many items
    #: are outside it, and swaps it in (0: never; a Qdrant server indexes by itself).
    #: Until then candidate queries read every vector (models/vector_store/edge_index.py).
    vector_index_after: int = Field(default=20_000, ge=0, le=1_000_000_000)
    #: Free space on data_dir's disk below which the embedded Qdrant takes no writes: the
    #: item side waits (lists are still served) and says so, instead of the engine being
    #: killed by SIGBUS on a full disk (its files are memory-mapped). 0: no reserve.
    min_free_disk_mb: int = Field(default=256, ge=0, le=1_000_000_000)
    #: How often the item side is checkpointed (and at stop), so a restart reads only
    #: the tail of item-updates; 0: no checkpoints, every start reads it all.
    item_checkpoint_interval_s: float = Field(default=300.0, ge=0, le=WEEK_S)

    # Item ingestion and encoders.
    #: The item encoders: "pretrained" (MiniLM, EfficientNet-Lite0, log-mel; the product)
    #: or "hashing" (encoders/hashing.py: no weights, starts in milliseconds; for tests of
    #: Kafka semantics and quick demos, not for real recommendations).
    encoders: Literal["pretrained", "hashing"] = "pretrained"
    #: Uploads encoded together, at most.
    encode_batch_size: int = Field(default=32, ge=1, le=100_000)
    #: How long a batch waits to fill.
    encode_batch_window_s: float = Field(default=0.1, gt=0, le=60)
    #: Intra-op threads of every encoder; 0 keeps torch's default.
    torch_threads: int = Field(default=0, ge=0, le=1024)
    #: A batch not encoded within this is encoded again one item at a time, and an item
    #: not encoded alone within it is dead-lettered (encode-timeout).
    encode_timeout_s: float = Field(default=120.0, gt=0, le=DAY_S)

    # Fusion of an item's modality vectors into its "content" vector.
    #: "average", "weighted" (``fusion_weights``) or "learned" (trained from co-engaged
    #: item pairs; encoders/learned_fusion.py).
    fusion: Literal["average", "weighted", "learned"] = "average"
    #: Per-modality weights of the "weighted" fusion.
    fusion_weights: dict[Literal["text", "image", "audio"], float] = Field(
        default_factory=lambda: {"text": 1.0, "image": 1.0, "audio": 1.0}
    )
    #: Learned fusion: refit once this many new co-engaged item pairs came in (checked
    #: every second; streams/fusion_refit.py).
    fusion_refresh_pairs: int = Field(default=500, ge=1, le=100_000_000)
    #: Learned fusion: also refit when this long has passed since the last refit and any
    #: new pair came in.
    fusion_refresh_interval_s: float = Field(default=300.0, gt=0, le=WEEK_S)
    #: Learned fusion: a refit trains on at most this many of the latest pairs...
    fusion_fit_max_pairs: int = Field(default=4096, ge=1, le=100_000_000)
    #: ...for this many passes, continuing from the current weights.
    fusion_fit_epochs: int = Field(default=5, ge=1, le=10_000)

    # Media: what a worker may fetch for an item, and how much.
    #: Largest media file, inline or fetched.
    media_max_bytes: int = Field(default=20_000_000, ge=1, le=INT32_MAX)
    #: Largest image, in pixels (checked from the header before decoding).
    media_max_image_pixels: int = Field(default=40_000_000, ge=1, le=1_000_000_000)
    #: Longest audio clip (checked from the header before decoding).
    media_max_audio_seconds: float = Field(default=600.0, gt=0, le=DAY_S)
    #: Longest image side (header field checked before decoding).
    media_max_image_side: int = Field(default=20_000, ge=1, le=1_000_000)
    #: Lowest audio sample rate accepted (header field checked before decoding).
    media_min_audio_sample_rate: int = Field(default=1_000, ge=1, le=10_000_000)
    #: Highest audio sample rate accepted: the resampler's work grows with it.
    media_max_audio_sample_rate: int = Field(default=192_000, ge=1, le=10_000_000)
    #: Most audio channels accepted.
    media_max_audio_channels: int = Field(default=16, ge=1, le=1024)
    #: Which media references are accepted.
    media_allowed_schemes: list[Literal["data", "file", "http", "https"]] = Field(
        default_factory=lambda: ["data", "file", "http", "https"]
    )
    #: The only directories ``file://`` may read (file access is off until set).
    media_allowed_dirs: list[Path] = Field(default_factory=list)
    #: http(s) host allow-list (empty: any public host).
    media_allowed_hosts: list[str] = Field(default_factory=list)
    #: Allow private, loopback and link-local addresses for http(s) media (and IPv6 ones
    #: carrying such an IPv4 address: NAT64, 6to4). Without it, a download connects to the
    #: address checked, never to a second resolution of the name (DNS rebinding).
    media_allow_private_hosts: bool = False
    #: http(s) connect timeout.
    media_connect_timeout_s: float = Field(default=3.0, gt=0, le=3600)
    #: How long an http(s) media body may take to arrive, whole (one read may overrun it
    #: by as much again); also bounds reading a ``file://``.
    media_read_timeout_s: float = Field(default=10.0, gt=0, le=3600)

    # Worker web server: the HTTP API, the dashboard, health and metrics.
    #: Address the web server listens on; beyond loopback it needs ``api_token``.
    web_host: str = "127.0.0.1"
    #: Port of the web server.
    web_port: int = Field(default=6066, ge=1, le=65535)
    #: HTTP connections served at once; one more is answered 503 and closed as it arrives,
    #: so connections cannot take the descriptors the worker's Kafka clients and files
    #: need. The worker raises its open-files limit to this plus 512 where it is lower.
    web_max_connections: int = Field(default=256, ge=1, le=1_000_000)
    #: Bearer token that HTTP writes need when set; required when ``web_host`` is beyond
    #: loopback. A secret, never printed.
    api_token: SecretStr | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _blank_means_local(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("fusion_weights", "hybrid_weights")
    @classmethod
    def _some_weight(cls, weights: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        if any(not 0 <= w <= MAX_WEIGHT for w in weights.values()) or not any(
            w > 0 for w in weights.values()
        ):
            raise ValueError(
                f"{info.field_name} must be from 0 to {MAX_WEIGHT:,.0f} with at least one > 0"
            )
        ease = info.field_name == "hybrid_weights" and weights.get("ease", 0) > 0
        if ease and not weights.get("item-item", 0) > 0:
            raise ValueError(
                "hybrid_weights: 'ease' is fitted from item-item's counts; "
                "give 'item-item' a weight above 0 too"
            )
        return weights

    @field_validator(*TOPIC_SETTINGS, "consumer_group")
    @classmethod
    def _kafka_name(cls, name: str, info: ValidationInfo) -> str:
        longest = 249 - (len(LONGEST_INTERNAL_SUFFIX) if info.field_name == "consumer_group" else 0)
        if not TOPIC_NAME.fullmatch(name) or name in (".", "..") or len(name) > longest:
            raise ValueError(
                f"{info.field_name}={name[:100]!r} is no name Kafka accepts: use 1 to {longest} "
                "ASCII letters, digits, '.', '_' or '-'"
            )
        return name

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, name: str) -> str:
        # A directory of data_dir for the embedded store: ".." put its files beside the
        # users database, and the start's reset of a damaged store could never succeed.
        if not COLLECTION_NAME.fullmatch(name):
            raise ValueError(
                f"collection={name[:100]!r}: use 1 to 100 ASCII letters, digits, '.', '_' "
                "or '-', not starting with '.'"
            )
        return name

    @field_validator("data_dir")
    @classmethod
    def _a_directory(cls, data_dir: Path) -> Path:
        # The first part of the path that exists must be a directory: below a file the
        # worker could create nothing, and failed with a traceback as it started.
        for part in (data_dir, *data_dir.absolute().parents):
            try:
                exists = part.exists()
            except OSError:  # a part that cannot be searched: the worker will say so
                break
            if exists:
                if not part.is_dir():
                    raise ValueError(
                        f"data_dir={str(data_dir)!r}: {part} is not a directory: point "
                        "data_dir at a directory (created when missing)"
                    )
                break
        return data_dir

    @model_validator(mode="after")
    def _topics_apart(self) -> Settings:
        """Each topic its own: with ``topic_dead_letters`` equal to ``topic_interactions``,
        every dead letter was read back as an interaction and dead-lettered again, forever;
        Faust's own topics are named after ``consumer_group``."""
        named: dict[str, str] = {}
        internal = self.users_changelog
        for setting in TOPIC_SETTINGS:
            name = getattr(self, setting)
            if name in named:
                raise ValueError(
                    f"{setting} and {named[name]} are both {name!r}: give each topic its own name"
                )
            if name == internal or name.startswith(f"{self.consumer_group}-__"):
                raise ValueError(
                    f"{setting}={name!r} is a topic Faust keeps for consumer_group "
                    f"{self.consumer_group!r}: choose another name"
                )
            named[name] = setting
        return self

    def check_web_exposure(self) -> None:
        """Refuse to serve HTTP beyond loopback without a token for writes, or with more
        connections than the process may open files for (its soft limit is raised where
        the hard one allows). Checked where a web server starts (the worker), not for
        every command: a CLI command in the worker's image (web_host 0.0.0.0) needs no
        token."""
        # Imported here: it loads Faust, which the commands that read settings need not.
        from streams.kafka_compat.web_server import reserve_descriptors

        if not is_loopback(self.web_host) and self.api_token is None:
            raise ValueError(
                f"api_token must be set when web_host={self.web_host!r} listens beyond "
                "loopback (STREAMREC_API_TOKEN): HTTP writes need it"
            )
        reserve_descriptors(self.web_max_connections)

    @property
    def users_changelog(self) -> str:
        """The users table's changelog topic (Faust names it after the consumer group)."""
        return f"{self.consumer_group}{CHANGELOG_SUFFIX}"

    @property
    def uses_local_broker(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def effective_broker_flavour(self) -> Literal["noida-db", "kafka"]:
        if self.broker_flavour != "auto":
            return self.broker_flavour
        return self.local_broker if self.uses_local_broker else "kafka"

    @property
    def effective_worker_id(self) -> str:
        if self.worker_id:
            return self.worker_id
        where = hashlib.sha1(str(self.data_dir.resolve()).encode()).hexdigest()[:10]
        return f"{socket.gethostname()}-{where}"

    @property
    def effective_bootstrap_servers(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.local_broker_port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(
                    f"{CONFIG_FILE_ENV}={config_file!r} does not name a file: "
                    "point it at a TOML file like deploy/streamrec.example.toml, or unset it"
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL and SASL_SSL, from the CA file and client certificate."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile:
            context.load_cert_chain(
                str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
            )
        return context

    def hybrid_options(self) -> dict[str, Any]:
        """``HybridRecommender``'s arguments from these settings (all but ``content_dim``)."""
        return {
            "weights": self.hybrid_weights,
            "learned": self.hybrid_blend == "learned",
            "served_k": self.top_k,
            "ease_l2": self.ease_l2,
            "ease_max_items": self.ease_max_items,
        }

    def aiokafka_options(self) -> dict[str, object]:
        """Security options in aiokafka's spelling (the worker's own plain consumers)."""
        options: dict[str, object] = {
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    def kafka_client_options(self) -> dict[str, object]:
        """Security options in kafka-python's spelling (admin, replay and CLI clients)."""
        options: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):  # the same default as aiokafka_options
            options["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.ssl_cafile:
            options["ssl_cafile"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            options["ssl_certfile"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            options["ssl_keyfile"] = str(self.ssl_keyfile)
        return options
