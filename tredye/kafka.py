"""The one place that builds Kafka clients, names topics and encodes the message envelope.

Everything here speaks plain Kafka through kafka-python, so it works the same against Apache
Kafka and against the Tansu broker used for local runs and tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)

ENVELOPE_VERSION = 1

# Logical topic names; the physical name carries KAFKA_TOPIC_PREFIX.
TICKS = "ticks"
ORDERS = "orders"
TRADES = "trades"
BOOK = "book"
ACCOUNT_EVENTS = "account-events"
DEAD_LETTER = "dead-letter"
ALL_TOPICS = (TICKS, ORDERS, TRADES, BOOK, ACCOUNT_EVENTS, DEAD_LETTER)


class EnvelopeError(ValueError):
    """A record that is not a valid Tredye envelope."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message: `{"type", "v", "key", "seq", "ts", "data"}`; `ts` is epoch ms."""

    type: str
    v: int
    key: str
    seq: int
    ts: int
    data: dict[str, Any]


def topic(name: str) -> str:
    """Return the physical topic name for a logical one."""
    return f"{settings.KAFKA_TOPIC_PREFIX}{name}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(*, type: str, key: str, seq: int, data: dict[str, Any], ts: int | None = None) -> bytes:  # noqa: A002
    """Encode one message in the envelope of docs/architecture.md §3."""
    envelope = {
        "type": type,
        "v": ENVELOPE_VERSION,
        "key": key,
        "seq": seq,
        "ts": now_ms() if ts is None else ts,
        "data": data,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def encode_json(*, type: str, key: str, seq: int, ts: int, data_json: str) -> bytes:  # noqa: A002
    """`encode` for data that is JSON text already (an object, as PostgreSQL's jsonb gives it),
    spliced in without decoding and encoding it again."""
    head = json.dumps(
        {"type": type, "v": ENVELOPE_VERSION, "key": key, "seq": seq, "ts": ts},
        separators=(",", ":"),
    )
    return f'{head[:-1]},"data":{data_json}}}'.encode()


def decode(raw: bytes | None) -> Envelope:
    """Decode and validate an envelope; raise EnvelopeError on anything malformed."""
    if raw is None:
        raise EnvelopeError("empty record")
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EnvelopeError(f"not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise EnvelopeError("envelope is not an object")
    kinds = {"type": str, "v": int, "key": str, "seq": int, "ts": int, "data": dict}
    for field, kind in kinds.items():
        value = payload.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EnvelopeError(f"field {field!r} missing or not {kind.__name__}")
    if payload["v"] != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {payload['v']}")
    return Envelope(
        type=payload["type"],
        v=payload["v"],
        key=payload["key"],
        seq=payload["seq"],
        ts=payload["ts"],
        data=payload["data"],
    )


def positive_decimal(data: dict[str, Any], name: str, *, required: bool = True) -> Decimal | None:
    """A field of an envelope's data that must be a positive, finite decimal string (None when
    it is absent and not `required`); EnvelopeError otherwise."""
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise EnvelopeError(f"{name} missing or not a decimal string")
    try:
        result = Decimal(value)
    except ArithmeticError:
        raise EnvelopeError(f"{name} is not a number") from None
    if not result.is_finite() or result <= 0:
        raise EnvelopeError(f"{name} must be positive")
    return result


def _common_config() -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "security_protocol": settings.KAFKA_SECURITY_PROTOCOL,
        "request_timeout_ms": settings.KAFKA_REQUEST_TIMEOUT_MS,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 5000,
        # How soon a client sees a topic's new id (a broker that came back empty, a topic
        # created again): see `topic_id`.
        "metadata_max_age_ms": settings.KAFKA_METADATA_MAX_AGE_MS,
    }
    if settings.KAFKA_SASL_MECHANISM:
        config.update(
            sasl_mechanism=settings.KAFKA_SASL_MECHANISM,
            sasl_plain_username=settings.KAFKA_SASL_USERNAME,
            sasl_plain_password=settings.KAFKA_SASL_PASSWORD,
        )
    return config


def producer(**overrides: Any) -> KafkaProducer:
    """Build a producer: acks from all replicas, idempotent, small linger for batching."""
    config = _common_config() | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_in_flight_requests_per_connection": 5,
        "retries": 2**31 - 1,
        "delivery_timeout_ms": 30000,
        # A send waits this long for metadata when the broker is away, then raises: callers
        # back off and rebuild instead of blocking for a minute (the default).
        "max_block_ms": 10000,
    }
    return KafkaProducer(**(config | overrides))


def producer_discard(client: KafkaProducer | None, *, timeout_s: float = 1.0) -> None:
    """Close a producer that may be broken, never raising; callers then build a new one.

    A kafka-python producer that lost its broker can stay in its error state for good (seen:
    KafkaTimeoutError on every send after the broker restarted, while a new producer worked
    at once), so every producer of ours is discarded after a produce error.
    """
    if client is None:
        return
    try:
        client.close(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - closing a broken producer
        logger.debug("closing a broken producer failed", exc_info=True)


def consumer(**overrides: Any) -> KafkaConsumer:
    """Build a consumer with no group and no auto-commit; callers assign partitions."""
    config = _common_config() | {
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        "max_poll_records": 2000,
        # Small: a broker that does not wake a waiting fetch early (Tansu) adds this to latency.
        "fetch_max_wait_ms": settings.KAFKA_FETCH_MAX_WAIT_MS,
    }
    return KafkaConsumer(**(config | overrides))


def topic_id(client: KafkaConsumer | KafkaProducer, physical: str) -> str:
    """The broker's id of a topic as the client's metadata last saw it ("" when unknown).

    A topic deleted and created again, or recreated by a broker that lost its history, has a
    new id; offsets kept for the old one mean nothing on it. Brokers before Kafka 2.8 send no
    ids: callers then take every stored offset as possibly stale.
    """
    # kafka-python keeps its metadata on a private attribute of each client kind.
    cluster = client._metadata if isinstance(client, KafkaProducer) else client._client.cluster  # noqa: SLF001
    found = cluster.topic_id(physical)
    if found is None or int(getattr(found, "int", 1)) == 0:
        return ""
    return str(found)


def admin() -> KafkaAdminClient:
    return KafkaAdminClient(**_common_config())


def ensure_topics(names: Iterable[str] = ALL_TOPICS, *, partitions: int | None = None) -> None:
    """Create the prefixed topics that do not exist yet."""
    client = admin()
    try:
        existing = set(client.list_topics())
        wanted = [
            NewTopic(
                topic(name),
                partitions or settings.KAFKA_PARTITIONS,
                settings.KAFKA_REPLICATION_FACTOR,
            )
            for name in names
            if topic(name) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                client.create_topics(wanted)
            logger.info("created topics %s", ", ".join(t.name for t in wanted))
    finally:
        client.close()


def reachable(timeout_s: float = 2.0) -> bool:
    """Tell whether a Kafka broker answers a metadata request within the timeout."""
    timeout_ms = max(int(timeout_s * 1000), 100)
    try:
        probe = KafkaConsumer(
            **(
                _common_config()
                | {
                    "request_timeout_ms": timeout_ms + 100,
                    "bootstrap_timeout_ms": timeout_ms,
                    "enable_auto_commit": False,
                }
            )
        )
    except KafkaError:
        return False
    probe.close()
    return True
