"""Versioned migrations: numbered SQL files, their applied state in `schema_migrations`.

Files are `NNNN_name.sql` beside this module, numbered 1, 2, 3... without gaps or repeats;
statements end with `;` at the end of a line. The same files run on a ClickHouse server and on
chDB, and on a cluster (CLICKHOUSE_CLUSTER) in their cluster form (connectors.clickhouse.cluster).
A migration that changed after it was applied, or one the database has but the code does not,
is refused."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from connectors.clickhouse.client import client, database
from connectors.clickhouse.cluster import on_cluster, state_table
from streams.settings import get_settings

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
STATE_TABLE = "schema_migrations"


class MigrationError(RuntimeError):
    """The migration files or the database's migration state are inconsistent."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text: a changed file is refused once applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def statements(self) -> list[str]:
        """Its statements, comments and blank lines dropped."""
        body = "\n".join(line for line in self.sql.splitlines()
                         if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def parse(files: dict[str, str]) -> list[Migration]:
    """Migrations from file name -> text; MigrationError on bad names, repeats or gaps."""
    found: dict[int, Migration] = {}
    for filename, text in sorted(files.items()):
        m = _NAME.match(filename)
        if m is None:
            raise MigrationError(f"{filename}: migration files are named NNNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{filename}: version {version} is also {found[version].name}")
        found[version] = Migration(version, filename, text)
    expected = list(range(1, len(found) + 1))
    if sorted(found) != expected:
        missing = sorted(set(expected) - set(found))
        raise MigrationError(f"migration versions must run 1..{len(found)} without gaps; "
                             f"missing {missing or 'none'}, have {sorted(found)}")
    return [found[v] for v in expected]


def packaged() -> list[Migration]:
    """The migrations shipped in connectors/clickhouse/migrations/."""
    folder = resources.files(__package__ or "connectors.clickhouse").joinpath("migrations")
    return parse({f.name: f.read_text("utf-8") for f in folder.iterdir()
                  if f.name.endswith(".sql")})


@dataclass(frozen=True)
class Status:
    """A migration and when it was applied (None: pending)."""

    migration: Migration
    applied_at: str | None


class Migrator:
    """Applies migrations to the database of a DSN."""

    def __init__(self, dsn: str, db: str | None = None,
                 migrations: list[Migration] | None = None, cluster: str | None = None) -> None:
        self.dsn, self.db = dsn, db or database(dsn)
        self.migrations = packaged() if migrations is None else migrations
        self.cluster = get_settings().connections.clickhouse_cluster if cluster is None \
            else cluster
        if self.cluster and dsn.startswith("chdb://"):
            raise MigrationError(f"CLICKHOUSE_CLUSTER={self.cluster} needs a ClickHouse server "
                                 "DSN (http:// or https://), not chDB")
        self._client: Any = None

    def statements(self, m: Migration) -> list[str]:
        """What applying `m` runs here: its statements, in their cluster form on a cluster."""
        if not self.cluster:
            return m.statements
        return [out for statement in m.statements for out in on_cluster(statement, self.cluster)]

    @property
    def client(self) -> Any:
        """A client on the database, created (with its state table) on first use."""
        if self._client is None:
            bootstrap = client(self.dsn, "default")
            on = f" ON CLUSTER `{self.cluster}`" if self.cluster else ""
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{self.db}`{on}")
            self._client = client(self.dsn, self.db)
            self._client.command(state_table(STATE_TABLE, self.cluster) if self.cluster else
                                 f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (version UInt32, "
                                 "name String, checksum String, applied_at DateTime64(3, 'UTC') "
                                 "DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
        return self._client

    def status(self) -> list[Status]:
        """Every migration with its applied time; MigrationError when the state disagrees."""
        rows = self.client.query(  # STATE_TABLE: a constant of this module
            f"SELECT version, name, checksum, toString(applied_at) FROM {STATE_TABLE} "  # noqa: S608
            "ORDER BY version").result_rows
        applied = {int(v): (n, c, at) for v, n, c, at in rows}
        known = {m.version: m for m in self.migrations}
        unknown = sorted(set(applied) - set(known))
        if unknown:
            raise MigrationError(f"database {self.db} has migrations {unknown} this code does "
                                 "not know: it is newer than this pushcascade")
        out = []
        for m in self.migrations:
            if m.version in applied and applied[m.version][1] != m.checksum:
                raise MigrationError(f"{m.name} changed after it was applied to {self.db}; "
                                     "add a new migration instead of editing an applied one")
            out.append(Status(m, applied[m.version][2] if m.version in applied else None))
        return out

    def pending(self) -> list[Migration]:
        """Migrations not applied yet, in order."""
        return [s.migration for s in self.status() if s.applied_at is None]

    def up(self) -> list[Migration]:
        """Apply every pending migration in order; returns them (empty: already current)."""
        done = []
        for m in self.pending():
            for statement in self.statements(m):
                self.client.command(statement)
            self.client.insert(STATE_TABLE, [[m.version, m.name, m.checksum]],
                               column_names=["version", "name", "checksum"])
            done.append(m)
        return done
