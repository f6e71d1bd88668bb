"""The migrations on a ClickHouse cluster (CLICKHOUSE_CLUSTER): every table as a Replicated
table on each node (`<name>_local`) and a Distributed table named like the single-server one,
so the sink, the views and the analysts' queries are the same on both.

Rows are sharded by the entity their identity belongs to (an account, a device, a campaign, a
dead letter's source), so a replay of a record lands on the shard that holds the first copy
and `FINAL` collapses it there. Plain text in, plain text out: nothing here talks to ClickHouse.
"""

from __future__ import annotations

import re

#: What each table is sharded by; every other table by account_id.
SHARD_BY = {
    "devices": "device_id",
    "campaign_decisions": "campaign_id",
    "dead_letters": "source_topic, source_partition, source_offset",
}
#: Where a Replicated table keeps its replication log in ClickHouse Keeper.
KEEPER_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"

_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*(\(.*\))\s*ENGINE = (\w+)"
                    r"(?:\(([^()]*)\))?(.*)$", re.S)
_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (\w+) AS\b(.*)$", re.S)
_ALTER = re.compile(r"^ALTER TABLE (\w+) (MODIFY COLUMN .*)$", re.S)


class ClusterError(ValueError):
    """A migration statement has no cluster form (only CREATE TABLE, CREATE VIEW and ALTER
    TABLE ... MODIFY COLUMN have)."""


def on_cluster(statement: str, cluster: str) -> list[str]:
    """The statements that do on `cluster` what `statement` does on one server."""
    name = f"`{cluster}`"
    table = _TABLE.match(statement.strip())
    if table is not None:
        table_name, columns, engine, args, rest = table.groups()
        local = f"{table_name}_local"
        params = KEEPER_PATH + (f", {args}" if args else "")
        shard = SHARD_BY.get(table_name, "account_id")
        return [
            f"CREATE TABLE IF NOT EXISTS {local} ON CLUSTER {name} {columns} "
            f"ENGINE = Replicated{engine}({params}){rest}",
            f"CREATE TABLE IF NOT EXISTS {table_name} ON CLUSTER {name} AS {local} "
            f"ENGINE = Distributed({name}, currentDatabase(), {local}, cityHash64({shard}))",
        ]
    view = _VIEW.match(statement.strip())
    if view is not None:
        view_name, body = view.groups()
        return [f"CREATE VIEW IF NOT EXISTS {view_name} ON CLUSTER {name} AS{body}"]
    alter = _ALTER.match(statement.strip())
    if alter is not None:  # the replicated tables, then the Distributed one (its defaults)
        table_name, change = alter.groups()
        return [f"ALTER TABLE {table_name}_local ON CLUSTER {name} {change}",
                f"ALTER TABLE {table_name} ON CLUSTER {name} {change}"]
    raise ClusterError(f"no cluster form for: {statement.strip()[:80]}")


def state_table(table: str, cluster: str) -> str:
    """The migrations' own state table, one replicated copy on every node of the cluster."""
    return (f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER `{cluster}` (version UInt32, "
            "name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            f"ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{{database}}/{table}', "
            "'{replica}') ORDER BY version")
