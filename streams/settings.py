"""Settings from environment variables (``STREAMREC_*``) and an optional TOML file.

The file is named by ``STREAMREC_CONFIG``; environment variables win over it, so a
deployment can keep a shared file and override one value per worker. See
``deploy/streamrec.example.toml`` for every key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from models.hybrid import HYBRID_WEIGHTS

CONFIG_FILE_ENV = "STREAMREC_CONFIG"


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

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="forbid")

    # Kafka connection. No bootstrap servers means "start the local noida-db broker".
    bootstrap_servers: str | None = None
    local_broker_port: int = 19092
    #: The broker started when no bootstrap servers are set: the embedded noida-db (no
    #: Java needed) or Apache Kafka (Java and Maven; docs/kafka.md).
    local_broker: Literal["noida-db", "kafka"] = "noida-db"
    #: What the bootstrap servers run: the compatibility patches noida-db needs are only
    #: installed on it (streams/kafka_compat/). "auto": ``local_broker`` when no bootstrap
    #: servers are set, else Kafka.
    broker_flavour: Literal["auto", "noida-db", "kafka"] = "auto"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # Topics. Interactions, item-updates and their tables must share a partition count.
    topic_items: str = "items"
    topic_interactions: str = "interactions"
    topic_recommendations: str = "recommendations"
    topic_item_updates: str = "item-updates"
    topic_dead_letters: str = "dead-letters"
    partitions: int = Field(default=2, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    consumer_group: str = "streamrec"
    #: Pause after a fetch that brought nothing, on noida-db only
    #: (streams/kafka_compat/fetch_backoff.py); 0 turns it off.
    empty_fetch_backoff_ms: float = Field(default=5.0, ge=0)
    #: This worker's stable identity in the consumer group (Kafka static membership): a
    #: worker that comes back under the same id takes its partitions back at once, where
    #: a new member would wait for the old one's session to time out. Default: the host
    #: name and the data directory, which no two workers share.
    worker_id: str | None = None
    #: How long the group waits for a silent worker (killed, frozen) before handing its
    #: partitions to the others; heartbeats go out at a third of it (at most every 3 s).
    consumer_session_timeout_s: float = Field(default=30.0, ge=3.0)
    #: A source partition with records past its committed offset and none delivered for
    #: this long (ready, not rebalancing) is read again from there, and so is a changelog
    #: partition a table recovery still needs (streams/kafka_compat/delivery_watchdog.py).
    delivery_stalled_after_s: float = Field(default=10.0, gt=0)
    #: Largest fetch per partition: items with inline media are large messages.
    consumer_max_fetch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Most records one poll hands to the agents. Bounded so that a poll's records are
    #: processed well within ``consumer_max_poll_interval_s`` even under a backlog.
    consumer_max_poll_records: int = Field(default=500, ge=1)
    #: A worker that does not poll for this long is taken for stuck and leaves the group.
    consumer_max_poll_interval_s: float = Field(default=300.0, gt=0)
    #: Workers that keep a standby copy of each users-table partition, for a fast
    #: takeover when its worker goes away.
    standby_replicas: int = Field(default=1, ge=0)
    #: Events waiting for an agent, at most (back pressure on the fetcher).
    stream_buffer_max_events: int = Field(default=4096, ge=1)

    # Storage. A qdrant_url selects the Qdrant server backend; otherwise the embedded
    # engine keeps its shard under data_dir.
    data_dir: Path = Path(".streamrec")
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    collection: str = "items"

    # Recommendation.
    top_k: int = Field(default=10, ge=1, le=1000)
    model_version: str = "hybrid-2"
    #: The hybrid's sources and weights (``models/hybrid.py``; measured in the README).
    hybrid_weights: dict[Literal["item-item", "trending", "cf", "content"], float] = Field(
        default_factory=lambda: dict(HYBRID_WEIGHTS)
    )
    #: "learned": ``hybrid_weights`` are the prior of a blend that learns from the clicks
    #: how much to trust each source per context (models/learned_blend.py); "fixed": as set.
    hybrid_blend: Literal["fixed", "learned"] = "learned"
    #: A new item's refreshed lists go to at most this many users whose content profile
    #: fits it best (0: none), checked this often (streams/new_items.py).
    new_item_push_users: int = Field(default=20, ge=0)
    new_item_push_interval_s: float = Field(default=1.0, gt=0)

    #: Up to this many items every list ranks the whole catalog; above, it ranks the
    #: candidates retrieved per source (models/candidates.py): Qdrant queries on the
    #: user's content profile and CF factor, co-engaged and trending items.
    dense_ranking_max_items: int = Field(default=20_000, ge=0)
    candidates_per_source: int = Field(default=200, ge=1)
    #: How often changed CF item vectors are written to Qdrant (the "cf" named vector).
    cf_publish_interval_s: float = Field(default=1.0, gt=0)
    #: How often the item side is checkpointed (and at stop), so a restart reads only
    #: the tail of item-updates; 0: no checkpoints, every start reads it all.
    item_checkpoint_interval_s: float = Field(default=300.0, ge=0)

    #: The item encoders: "pretrained" (MiniLM, EfficientNet-Lite0, log-mel; the product)
    #: or "hashing" (encoders/hashing.py: no weights, starts in milliseconds; for tests of
    #: Kafka semantics and quick demos, not for real recommendations).
    encoders: Literal["pretrained", "hashing"] = "pretrained"
    # Item ingestion: how many uploads are encoded together, and how long to wait for them.
    encode_batch_size: int = Field(default=32, ge=1)
    encode_batch_window_s: float = Field(default=0.1, gt=0)
    torch_threads: int = Field(default=0, ge=0, description="0 keeps torch's default")
    #: A batch not encoded within this is encoded again one item at a time, and an item
    #: not encoded alone within it is dead-lettered (encode-timeout).
    encode_timeout_s: float = Field(default=120.0, gt=0)

    # Fusion of an item's modality vectors into its "content" vector.
    fusion: Literal["average", "weighted", "learned"] = "average"
    fusion_weights: dict[Literal["text", "image", "audio"], float] = Field(
        default_factory=lambda: {"text": 1.0, "image": 1.0, "audio": 1.0}
    )
    #: Learned fusion: retrain after this many new co-engaged item pairs, checked this often.
    fusion_refresh_pairs: int = Field(default=500, ge=1)
    fusion_refresh_interval_s: float = Field(default=30.0, gt=0)

    # Media: what a worker may fetch for an item, and how much.
    media_max_bytes: int = Field(default=20_000_000, ge=1)
    media_max_image_pixels: int = Field(default=40_000_000, ge=1)
    media_max_audio_seconds: float = Field(default=600.0, gt=0)
    #: Header fields checked before decoding: what decoders and the resampler size from.
    media_max_image_side: int = Field(default=20_000, ge=1)
    media_min_audio_sample_rate: int = Field(default=1_000, ge=1)
    media_max_audio_sample_rate: int = Field(default=192_000, ge=1)
    media_max_audio_channels: int = Field(default=16, ge=1)
    media_allowed_schemes: list[Literal["data", "file", "http", "https"]] = Field(
        default_factory=lambda: ["data", "file", "http", "https"]
    )
    media_allowed_dirs: list[Path] = Field(default_factory=list)
    media_allowed_hosts: list[str] = Field(default_factory=list)
    media_allow_private_hosts: bool = False
    media_connect_timeout_s: float = Field(default=3.0, gt=0)
    media_read_timeout_s: float = Field(default=10.0, gt=0)

    # Worker web server (stats and health; used by the demo to see when items are in).
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: Bearer token that HTTP writes need when web_host is beyond loopback (required then).
    api_token: SecretStr | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _blank_means_local(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("fusion_weights", "hybrid_weights")
    @classmethod
    def _some_weight(cls, weights: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"{info.field_name} must be >= 0 with at least one > 0")
        return weights

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> Settings:
        if not is_loopback(self.web_host) and self.api_token is None:
            raise ValueError(
                f"api_token must be set when web_host={self.web_host!r} listens beyond "
                "loopback (STREAMREC_API_TOKEN): HTTP writes need it"
            )
        return self

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
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
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
