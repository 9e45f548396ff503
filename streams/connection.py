"""One connection to the broker with the configured security, before anything else talks
to it: a wrong setting fails within seconds as one line naming the setting.

Kafka clients retry what fails at connection time (kafka-python keeps bootstrapping until
its timeout, then says only "Unable to bootstrap"), so a wrong password or an untrusted
certificate looked like a broker that is down. This check opens one connection with
aiokafka, which reports the TLS or SASL error itself, and translates it. No message
carries the password.
"""

from __future__ import annotations

import asyncio
import ssl

from streams.settings import Settings


class BrokerConnectionError(Exception):
    """The broker cannot be used with these settings; ``retriable`` when it may just not be
    up yet (nothing answers), not when it refused the settings."""

    def __init__(self, message: str, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


def check_connection(settings: Settings, timeout_s: float = 10.0) -> None:
    """Connect to the first bootstrap server with the settings' security; raise
    ``BrokerConnectionError`` naming the setting to fix."""
    try:
        asyncio.run(asyncio.wait_for(_connect(settings), timeout_s))
    except BrokerConnectionError:
        raise
    except Exception as error:
        raise _explain(settings, error) from None


async def _connect(settings: Settings) -> None:
    from aiokafka.conn import create_conn

    server = settings.effective_bootstrap_servers.split(",")[0].strip()
    host, _, port = server.rpartition(":")
    try:
        options = settings.aiokafka_options()  # reads the CA and client certificate files
    except OSError as error:
        raise BrokerConnectionError(
            f"the TLS files cannot be read: check ssl_cafile, ssl_certfile and ssl_keyfile "
            f"({error.strerror}: {error.filename})"
        ) from None
    conn = await create_conn(
        host,
        int(port),
        security_protocol=settings.security_protocol,
        ssl_context=options["ssl_context"],  # type: ignore[arg-type]
        sasl_mechanism=str(options.get("sasl_mechanism", "PLAIN")),
        sasl_plain_username=options.get("sasl_plain_username"),  # type: ignore[arg-type]
        sasl_plain_password=options.get("sasl_plain_password"),  # type: ignore[arg-type]
    )
    conn.close()


def _explain(settings: Settings, error: BaseException) -> BrokerConnectionError:
    from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

    servers = settings.effective_bootstrap_servers
    if isinstance(error, SaslAuthenticationFailed):
        return BrokerConnectionError(
            f"the broker at {servers} refused sasl_username {settings.sasl_username!r} "
            f"with sasl_mechanism {settings.sasl_mechanism}: check sasl_password "
            "(STREAMREC_SASL_PASSWORD) and sasl_username"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return BrokerConnectionError(
            f"the TLS certificate of the broker at {servers} is not trusted: check ssl_cafile "
            f"({settings.ssl_cafile or 'unset: the system CAs'}); {error.verify_message}"
        )
    if isinstance(error, ssl.SSLError):
        return BrokerConnectionError(
            f"TLS with the broker at {servers} failed: check security_protocol "
            f"({settings.security_protocol}) and the ssl_* settings; {error.reason}"
        )
    if isinstance(error, ConnectionRefusedError | asyncio.TimeoutError | TimeoutError):
        return BrokerConnectionError(
            f"no broker answers at bootstrap_servers {servers}", retriable=True
        )
    if isinstance(error, KafkaConnectionError):
        return BrokerConnectionError(
            f"the broker at {servers} closed the connection: check that security_protocol "
            f"({settings.security_protocol}) is the one its listener speaks"
        )
    return BrokerConnectionError(f"cannot connect to {servers}: {type(error).__name__}: {error}")
