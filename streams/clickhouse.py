"""ClickHouse clients from CLICKHOUSE_DSN: chDB in-process (chdb://dir) or a server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import clickhouse_connect

_MEMORY = ("memory", ":memory:")


def client(dsn: str) -> Any:
    """A clickhouse-connect client: chdb:///abs/dir, chdb://./rel/dir, chdb://memory or http(s)://."""
    if dsn.startswith("chdb://"):
        location = dsn[len("chdb://"):]
        if location.split("/")[0] in _MEMORY:
            return clickhouse_connect.get_client(dsn=dsn)
        path = Path(location).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(interface="chdb", path=str(path))
    if dsn.startswith(("http://", "https://")):
        return clickhouse_connect.get_client(dsn=dsn)
    raise ValueError(f"CLICKHOUSE_DSN={dsn!r}: expected chdb:///dir, chdb://memory or http://...")
