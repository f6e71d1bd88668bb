"""ClickHouse clients from CLICKHOUSE_DSN: chDB in-process (chdb://dir) or a server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

_MEMORY = ("memory", ":memory:")
#: The database of the delivery tables when the DSN names none (always, for chDB).
DATABASE = "pushcascade"


def database(dsn: str) -> str:
    """The database the tables live in: the http DSN's path, else `pushcascade`."""
    if dsn.startswith(("http://", "https://")):
        return urlsplit(dsn).path.strip("/") or DATABASE
    return DATABASE


def chdb_dir(dsn: str) -> Path | None:
    """The data directory of an on-disk chDB DSN; None for memory or a server."""
    if not dsn.startswith("chdb://"):
        return None
    location = dsn[len("chdb://"):]
    return None if location.split("/")[0] in _MEMORY else Path(location).resolve()


def client(dsn: str, db: str | None = None) -> Any:
    """A clickhouse-connect client: chdb:///abs/dir, chdb://./rel/dir, chdb://memory or
    http(s)://; `db` sets its database (it must exist)."""
    options: dict[str, Any] = {} if db is None else {"database": db}
    if dsn.startswith("chdb://"):
        path = chdb_dir(dsn)
        if path is None:
            return clickhouse_connect.get_client(dsn=dsn, **options)
        path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(path), **options)
    if dsn.startswith(("http://", "https://")):
        return clickhouse_connect.get_client(dsn=dsn, **options)
    raise ValueError(f"CLICKHOUSE_DSN={dsn!r}: expected chdb:///dir, chdb://memory or http://...")
