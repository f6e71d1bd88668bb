-- One table per event stream. Every row carries its Kafka coordinates (topic, partition,
-- offset) and its event time. ReplacingMergeTree keyed on the record's own identity: a replay
-- of the same records, or a send the router repeated with the same send_id, is one row after
-- FINAL (the views use FINAL). Addresses, push tokens, titles and bodies are never stored.
-- route and device_id are '' where the record has none. EPHEMERAL columns are not stored: the
-- sink inserts the record's fields and ClickHouse derives the stored columns from them.

CREATE TABLE IF NOT EXISTS requests
(
    message_id   String,
    account_id   String,
    importance   LowCardinality(String),
    read_action  LowCardinality(String),
    link         Nullable(String) EPHEMERAL,
    device_ids   Array(String) EPHEMERAL,
    has_link     Bool DEFAULT link IS NOT NULL,
    campaign_id  Nullable(String),
    device_count UInt16 DEFAULT length(device_ids),
    created_at   DateTime64(3, 'UTC'),
    event_time   DateTime64(3, 'UTC') ALIAS created_at,
    topic        LowCardinality(String),
    partition    UInt32,
    offset       UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(created_at)
ORDER BY (account_id, message_id)
TTL toDateTime(created_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS sends
(
    send_id    String,
    message_id String,
    account_id String,
    channel    LowCardinality(String),
    device_id  String,
    route      LowCardinality(String),
    reason     LowCardinality(String),
    attempt    UInt16,
    importance LowCardinality(String),
    sent_at    DateTime64(3, 'UTC'),
    event_time DateTime64(3, 'UTC') ALIAS sent_at,
    topic      LowCardinality(String),
    partition  UInt32,
    offset     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(sent_at)
ORDER BY (channel, route, reason, send_id)
TTL toDateTime(sent_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS acks
(
    message_id String,
    account_id String,
    channel    LowCardinality(String),
    kind       LowCardinality(String),
    device_id  String,
    route      LowCardinality(String),
    send_id    String,
    acked_at   DateTime64(3, 'UTC'),
    event_time DateTime64(3, 'UTC') ALIAS acked_at,
    topic      LowCardinality(String),
    partition  UInt32,
    offset     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(acked_at)
ORDER BY (channel, kind, account_id, message_id, send_id, device_id)
TTL toDateTime(acked_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS results
(
    message_id String,
    account_id String,
    status     LowCardinality(String),
    channel    LowCardinality(String),
    device_id  String,
    route      LowCardinality(String),
    send_id    String,
    detail     String,
    at         DateTime64(3, 'UTC'),
    event_time DateTime64(3, 'UTC') ALIAS at,
    topic      LowCardinality(String),
    partition  UInt32,
    offset     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(at)
ORDER BY (status, account_id, message_id, send_id, device_id)
TTL toDateTime(at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS escalations
(
    message_id   String,
    account_id   String,
    from_channel LowCardinality(String),
    to_channel   LowCardinality(String),
    deadline_at  DateTime64(3, 'UTC'),
    fired_at     DateTime64(3, 'UTC'),
    event_time   DateTime64(3, 'UTC') ALIAS fired_at,
    topic        LowCardinality(String),
    partition    UInt32,
    offset       UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(deadline_at)
ORDER BY (from_channel, account_id, message_id)
TTL toDateTime(deadline_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS route_changes
(
    device_id    String,
    account_id   String,
    from_route   LowCardinality(String),
    to_route     LowCardinality(String),
    success_rate Float64,
    reason       LowCardinality(String),
    changed_at   DateTime64(3, 'UTC'),
    event_time   DateTime64(3, 'UTC') ALIAS changed_at,
    topic        LowCardinality(String),
    partition    UInt32,
    offset       UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(changed_at)
ORDER BY (device_id, changed_at, to_route)
TTL toDateTime(changed_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS campaign_decisions
(
    campaign_id String,
    targeted    UInt32,
    acked       UInt32,
    ratio       Float64,
    threshold   Float64,
    fallback    Bool,
    decided_at  DateTime64(3, 'UTC'),
    event_time  DateTime64(3, 'UTC') ALIAS decided_at,
    topic       LowCardinality(String),
    partition   UInt32,
    offset      UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(decided_at)
ORDER BY campaign_id
TTL toDateTime(decided_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS lifecycle
(
    account_id String,
    lifecycle  LowCardinality(String),
    pushes     UInt32,
    changed_at DateTime64(3, 'UTC'),
    event_time DateTime64(3, 'UTC') ALIAS changed_at,
    topic      LowCardinality(String),
    partition  UInt32,
    offset     UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(changed_at)
ORDER BY (account_id, lifecycle)
TTL toDateTime(changed_at) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS outcomes
(
    send_id             String,
    message_id          String,
    account_id          String,
    channel             LowCardinality(String),
    device_id           String,
    route               LowCardinality(String),
    provider            LowCardinality(String),
    status              LowCardinality(String),
    provider_message_id String,
    error_code          LowCardinality(String),
    attempts            UInt16,
    latency_ms          Int32,
    at                  DateTime64(3, 'UTC'),
    event_time          DateTime64(3, 'UTC') ALIAS at,
    topic               LowCardinality(String),
    partition           UInt32,
    offset              UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(at)
ORDER BY (channel, provider, send_id)
TTL toDateTime(at) + INTERVAL 400 DAY;

-- Dimensions: the latest registration of each device and settings of each account.
CREATE TABLE IF NOT EXISTS devices
(
    device_id     String,
    account_id    String,
    manufacturer  LowCardinality(String),
    model         LowCardinality(String),
    routes        Array(LowCardinality(String)),
    active        Bool,
    registered_at DateTime64(3, 'UTC'),
    event_time    DateTime64(3, 'UTC') ALIAS registered_at,
    topic         LowCardinality(String),
    partition     UInt32,
    offset        UInt64
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY device_id;

CREATE TABLE IF NOT EXISTS account_settings
(
    account_id String,
    primary    LowCardinality(String),
    secondary  LowCardinality(String),
    updated_at DateTime64(3, 'UTC'),
    event_time DateTime64(3, 'UTC') ALIAS updated_at,
    topic      LowCardinality(String),
    partition  UInt32,
    offset     UInt64
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY account_id;

-- Dead letters without their key and bytes (they may hold personal data): where and why.
CREATE TABLE IF NOT EXISTS dead_letters
(
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    error            String,
    failed_at        DateTime64(3, 'UTC'),
    event_time       DateTime64(3, 'UTC') ALIAS failed_at,
    topic            LowCardinality(String),
    partition        UInt32,
    offset           UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(failed_at)
ORDER BY (source_topic, source_partition, source_offset)
TTL toDateTime(failed_at) + INTERVAL 400 DAY;
