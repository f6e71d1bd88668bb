"""Configuration from environment variables: one validated Settings object for every process."""

from __future__ import annotations

import hashlib
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.domain import escalation

CHANNELS = ("APP", "WECHAT", "SMS", "EMAIL")
DEFAULT_CHANNEL_ORDER = "APP,WECHAT,SMS,EMAIL"
DEFAULT_CHANNEL_COST = ",".join(f"{c}={v:g}" for c, v in escalation.DEFAULT_CHANNEL_COST.items())
IMPORTANCES = ("LOW", "NORMAL", "HIGH", "URGENT")
#: What a read is worth per importance, in the unit of the channel costs (URGENT: always sent).
DEFAULT_READ_VALUE = ",".join(f"{i}={v:g}" for i, v in escalation.DEFAULT_READ_VALUE.items()
                              if i not in escalation.ALWAYS)


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the environment variable."""


class Unreachable(RuntimeError):
    """A part the command needs (Kafka, ClickHouse) did not answer; the message says what was
    tried, what failed and which setting to check."""


class Connections(BaseSettings):
    """Where Kafka, ClickHouse and the optional Schema Registry are (no prefix)."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "", description="Kafka bootstrap servers; empty = start the embedded broker"
    )
    clickhouse_dsn: SecretStr = Field(
        SecretStr("chdb://./var/chdb"),
        description="chdb:///abs/dir, chdb://./rel/dir, chdb://memory or http://u:p@host:8123/db "
        "(it may hold a password: never printed or logged)",
    )
    clickhouse_analyst_dsn: SecretStr = Field(
        SecretStr(""), description="what `pushcascade sql` and `report` use on a ClickHouse "
        "server: a user with the read-only profile of deploy/clickhouse/analyst.sql; empty = "
        "CLICKHOUSE_DSN (every analyst query runs with readonly=1 either way)")
    schema_registry_url: str = Field(
        "", description="Confluent Schema Registry URL; empty = ids pinned in schemas/ids.json"
    )
    schema_registry_basic_auth: SecretStr = Field(
        SecretStr(""), description="Schema Registry basic auth as user:password (never printed)")
    schema_registry_ca_location: str = Field(
        "", description="CA bundle (PEM) that signed the Schema Registry's certificate (https)")
    schema_registry_subject_naming: Literal["record", "topic"] = Field(
        "record", description="record: subject = the record's full name; topic: Confluent's "
        "default `<topic>-value` for a record that is its topic's only one")
    clickhouse_cluster: str = Field(
        "", description="ClickHouse cluster name: migrations create Replicated tables on every "
        "node and Distributed tables over them; empty = one server (or chDB)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Kafka client connects")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_* protocols)")
    kafka_sasl_username: str = Field("", description="SASL user name")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password (never "
                                           "printed or logged)")
    kafka_ssl_ca_location: str = Field("", description="CA bundle (PEM) that signed the brokers' "
                                       "certificates; empty = the system's")
    kafka_ssl_certificate_location: str = Field("", description="client certificate (PEM) for "
                                                "mutual TLS")
    kafka_ssl_key_location: str = Field("", description="client private key (PEM) for mutual TLS")

    @model_validator(mode="after")
    def _sasl_has_a_user(self) -> Connections:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_username:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        return self

    @property
    def dsn(self) -> str:
        """CLICKHOUSE_DSN itself (it may hold a password: print it only through `shown`)."""
        return self.clickhouse_dsn.get_secret_value()

    @property
    def analyst_dsn(self) -> str:
        """The DSN analysts query with: CLICKHOUSE_ANALYST_DSN on a server, else CLICKHOUSE_DSN."""
        return self.clickhouse_analyst_dsn.get_secret_value() or self.dsn

    def registry_config(self) -> dict[str, str]:
        """The confluent SchemaRegistryClient configuration: URL, basic auth, CA bundle."""
        config = {"url": self.schema_registry_url}
        if self.schema_registry_basic_auth.get_secret_value():
            config["basic.auth.user.info"] = self.schema_registry_basic_auth.get_secret_value()
        if self.schema_registry_ca_location:
            config["ssl.ca.location"] = self.schema_registry_ca_location
        return config

    def kafka_security(self) -> dict[str, str]:
        """The librdkafka settings of the configured protocol (empty for PLAINTEXT)."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": protocol.lower()}
        if protocol.startswith("SASL"):
            config.update({"sasl.mechanism": self.kafka_sasl_mechanism,
                           "sasl.username": self.kafka_sasl_username,
                           "sasl.password": self.kafka_sasl_password.get_secret_value()})
        for key in ("ca", "certificate", "key"):
            value = getattr(self, f"kafka_ssl_{key}_location")
            if value and protocol.endswith("SSL"):
                config[f"ssl.{key}.location"] = value
        return config


class Tuning(BaseSettings):
    """Method A and Method B parameters, prefixed PUSHCASCADE_ (durations in seconds)."""

    model_config = SettingsConfigDict(env_prefix="PUSHCASCADE_", extra="ignore")

    topic_prefix: str = Field("", description="prepended to every topic name")
    partitions: int = Field(4, ge=1, description="partition count of account-keyed topics")
    new_account_pushes: int = Field(5, ge=0, description="pushes before an account is established")
    score_k1: float = Field(1.0, ge=0, description="weight of feedback_count in importance_base")
    score_k2: float = Field(2.0, ge=0, description="weight of first_feedback in importance_base")
    read_deadline_low: float = Field(86400.0, gt=0, description="read deadline of LOW pushes")
    read_deadline_normal: float = Field(3600.0, gt=0, description="read deadline of NORMAL")
    read_deadline_high: float = Field(600.0, gt=0, description="read deadline of HIGH pushes")
    read_deadline_urgent: float = Field(60.0, gt=0, description="read deadline of URGENT")
    receipt_deadline: float = Field(30.0, gt=0, description="wait for a device RECEIPT")
    probe_count_first: int = Field(100, ge=1, description="probes that measure a route")
    probe_count_again: int = Field(20, ge=1, description="probes that re-test a target route")
    min_route_success: float = Field(0.8, ge=0, le=1, description="re-probe rate to keep target")
    probe_interval: float = Field(86400.0, gt=0, description="re-probe a target route this often")
    probe_device_per_hour: float = Field(12.0, gt=0, description="probes per device per hour")
    probe_global_per_second: float = Field(50.0, gt=0, description="probes per second per worker")
    probe_timeout: float = Field(300.0, gt=0, description="a probe without receipt is lost after")
    route_half_life: float = Field(
        3600.0, gt=0, description="adaptive: seconds after which a route outcome on a device "
        "weighs half (a route that failed in an outage is tried again once it is old news)")
    route_prior_strength: float = Field(
        32.0, gt=0, description="adaptive: how many outcomes the fleet's prior of a route "
        "counts for on each device (a route without a fleet rate: 2)")
    campaign_fallback_ratio: float = Field(
        0.5, ge=0, le=1, description="fallback only if receipts/targeted is below this"
    )
    journal_chunk_bytes: int = Field(
        512 * 1024, ge=1024, description="largest state-journal record; a larger batch is "
        "split into chunks that recovery applies only together")
    channel_order: str = Field(DEFAULT_CHANNEL_ORDER, description="tie-break order of channels")
    channel_cost: str = Field(
        DEFAULT_CHANNEL_COST, description="cost of one send per channel (CHANNEL=cost, comma "
        "separated; a channel left out costs 0; an app push is one send per phone): adaptive "
        "escalates only where the next channel's expected reads are worth its cost, and the "
        "demo reports cost per read")
    read_value: str = Field(
        DEFAULT_READ_VALUE, description="what a read is worth per importance, in the unit of "
        "the channel costs (IMPORTANCE=value; URGENT always escalates, one left out is worth 0)")
    send_price: float = Field(
        escalation.DEFAULT_SEND_PRICE, ge=0, le=1, description="adaptive: reads a send must be "
        "expected to add, whatever its cost (an app push: per phone); a push the user did not "
        "need costs their attention. 0 sends every channel worth its money cost")
    read_window: float = Field(
        escalation.DEFAULT_READ_WINDOW, gt=0, le=100, description="adaptive: read deadlines "
        "after its request within which a read reaches the user in time; its plan sends "
        "what adds reads within it")
    strategy: Literal["blast", "fixed-fallback", "seed", "adaptive"] = Field(
        "seed", description="how channels are chosen: seed = Method A as specified; adaptive = "
        "ours (decayed scores, early establishment, a ladder); blast and fixed-fallback are the "
        "baselines it is measured against")
    score_decay: float = Field(0.6, gt=0, le=1, description="adaptive: weight older reads keep "
                               "at each newly read message")
    reach_grace: float = Field(
        30.0, ge=0, description="a request that finds no channel (or a device that turns up "
        "late) waits this long for the account's profile or device registration")
    message_retention: float = Field(
        86400.0, gt=0, description="message state is removed this long after its last deadline; "
        "a repeated request within it is the same message")
    deadline_tick: float = Field(0.05, gt=0, description="how often due deadlines are checked")
    flush_interval: float = Field(
        0.25, gt=0, le=5, description="how often a worker's batch (state, outputs and input "
        "offsets, together) is written: what its outputs wait at most")
    fetch_wait: float = Field(
        0.1, gt=0, le=1.5, description="longest a worker's fetch waits on an idle partition")
    input_slack: float = Field(
        0.25, ge=0, description="a deadline fires only once every input was fetched this long "
        "(besides the fetch wait) after it came due: a READ acknowledged by the broker that "
        "soon after is handled first")
    broker_profile: Literal["tansu", "kafka"] = Field(
        "tansu", description="tansu: work around the embedded broker's differences (INFRA.md)"
    )
    transactions: bool | None = Field(
        None, description="Kafka transactions around each flush's journal records and "
        "outputs (read_committed readers see a batch whole or not at all); default: on with "
        "broker_profile=kafka, off on the embedded broker (it shows aborted records)")
    transactional_id: str = Field(
        "", description="a worker's transactional.id, stable across its restarts and unique "
        "among workers; default: <topic prefix>pushcascade-<host>-<hash of data_dir>")
    metrics_port: int = Field(0, ge=0, description="Prometheus /metrics port of a worker; 0 = off")
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb://")
    data_dir: str = Field("var/worker", description="worker data directory (rocksdb tables)")
    rocksdb_block_cache_mb: int = Field(
        256, ge=8, description="RocksDB block cache per table partition store, MiB")
    rocksdb_write_buffer_mb: int = Field(64, ge=4, description="RocksDB write buffer, MiB")
    rocksdb_max_open_files: int = Field(
        512, ge=-1, description="RocksDB open files per store (-1 = unlimited)")
    standby_replicas: int = Field(
        0, ge=0, description="workers keeping a warm copy of each table partition (fast failover)")
    replication_factor: int = Field(
        0, ge=0, description="replication factor of created topics and changelogs; 0 = 1 on a "
        "single broker, else the cluster's default")

    @field_validator("channel_order")
    @classmethod
    def _known_channels(cls, value: str) -> str:
        names = [c.strip().upper() for c in value.split(",") if c.strip()]
        unknown = [n for n in names if n not in CHANNELS]
        if unknown or len(set(names)) != len(names) or not names:
            raise ValueError(f"must list distinct channels of {', '.join(CHANNELS)}; got {value!r}")
        return ",".join(names)

    @field_validator("channel_cost")
    @classmethod
    def _costs(cls, value: str) -> str:
        parse_amounts(value, CHANNELS)
        return value

    @field_validator("read_value")
    @classmethod
    def _values(cls, value: str) -> str:
        parse_amounts(value, IMPORTANCES)
        return value

    @model_validator(mode="after")
    def _receipt_within_probe_timeout(self) -> Tuning:
        if self.receipt_deadline > self.probe_timeout:
            raise ValueError(
                f"PUSHCASCADE_RECEIPT_DEADLINE={self.receipt_deadline:g} must not exceed "
                f"PUSHCASCADE_PROBE_TIMEOUT={self.probe_timeout:g}: a send is forgotten as lost "
                f"after the probe timeout, so a receipt between the two would be dropped")
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        """The channel tie-break order as a tuple."""
        return tuple(self.channel_order.split(","))

    @property
    def costs(self) -> dict[str, float]:
        """The cost of one send per channel."""
        return parse_amounts(self.channel_cost, CHANNELS)

    @property
    def read_values(self) -> dict[str, float]:
        """What a read is worth per importance (URGENT: without bound)."""
        return {**parse_amounts(self.read_value, IMPORTANCES), "URGENT": float("inf")}

    def read_deadline(self, importance: str) -> float:
        """Seconds a push of this importance waits for a READ ack before escalating."""
        return float(getattr(self, f"read_deadline_{importance.lower()}"))

    @property
    def transactional(self) -> bool:
        """Whether workers wrap each flush in a Kafka transaction."""
        return self.broker_profile == "kafka" if self.transactions is None else self.transactions

    def worker_transactional_id(self) -> str:
        """This worker's transactional.id: the setting, else one derived from its host and
        data directory (stable across restarts in place, distinct between workers)."""
        if self.transactional_id:
            return self.transactional_id
        place = hashlib.sha256(str(Path(self.data_dir).resolve()).encode()).hexdigest()[:12]
        return f"{self.topic_prefix}pushcascade-{socket.gethostname()}-{place}"


def parse_amounts(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """`APP=0,SMS=0.05` as {name: amount}, a name left out 0; ValueError naming the part."""
    amounts: dict[str, float] = dict.fromkeys(names, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, number = part.partition("=")
        name = name.strip().upper()
        try:
            amount = float(number)
        except ValueError:
            amount = -1.0
        if name not in names or not 0 <= amount < float("inf"):
            raise ValueError(f"{part!r}: each part must be NAME=amount with a name of "
                             f"{', '.join(names)} and a finite amount >= 0")
        amounts[name] = amount
    return amounts


class Settings:
    """Connections and tuning together, validated at start."""

    def __init__(self, **overrides: Any) -> None:
        conn_keys = set(Connections.model_fields)
        try:
            self.connections = Connections(**{k: v for k, v in overrides.items() if k in conn_keys})
            self.tuning = Tuning(**{k: v for k, v in overrides.items() if k not in conn_keys})
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    def topic(self, name: str) -> str:
        """The full topic name with the configured prefix."""
        return f"{self.tuning.topic_prefix}{name}"


def _describe(exc: ValidationError) -> str:
    """Turn a pydantic error into lines naming the environment variables."""
    prefix = "" if exc.title == Connections.__name__ else "PUSHCASCADE_"
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across variables: its message names them
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        var = prefix + "_".join(str(p) for p in err["loc"]).upper()
        lines.append(f"{var}={err.get('input')!r}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
