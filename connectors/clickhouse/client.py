"""ClickHouse clients from CLICKHOUSE_DSN: chDB in-process (chdb://dir) or a server over HTTP."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import OperationalError, ProgrammingError

from streams.settings import Unreachable

_MEMORY = ("memory", ":memory:")
#: The database of the delivery tables when the DSN names none (always, for chDB).
DATABASE = "pushcascade"


def database(dsn: str) -> str:
    """The database the tables live in: the http DSN's path, else `pushcascade`."""
    if dsn.startswith(("http://", "https://")):
        return urlsplit(dsn).path.strip("/") or DATABASE
    return DATABASE


def shown(dsn: str) -> str:
    """The DSN as it may be printed or logged: its password replaced by ***."""
    try:
        url = urlsplit(dsn)
        password = url.password
    except ValueError:  # not a URL urllib can split
        password = None
    if password is not None:
        return url._replace(netloc=url.netloc.replace(f":{password}@", ":***@", 1)).geturl()
    # whatever sits between the user's ':' and an '@' may be a password
    return _USERINFO.sub(r"\1:***@", dsn, count=1)


#: An optional scheme, a user name, ':', then anything up to '@'.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^:/@]*):[^@]*@")


def chdb_dir(dsn: str) -> Path | None:
    """The data directory of an on-disk chDB DSN; None for memory or a server."""
    if not dsn.startswith("chdb://"):
        return None
    location = dsn[len("chdb://"):]
    return None if location.split("/")[0] in _MEMORY else Path(location).resolve()


def client(dsn: str, db: str | None = None, timeout: float = 5.0) -> Any:
    """A clickhouse-connect client: chdb:///abs/dir, chdb://./rel/dir, chdb://memory or
    http(s)://; `db` sets its database (it must exist). Unreachable when the server does not
    answer within timeout or another process holds the chDB directory."""
    options: dict[str, Any] = {} if db is None else {"database": db}
    if dsn.startswith("chdb://"):
        path = chdb_dir(dsn)
        if path is None:
            return clickhouse_connect.get_client(dsn=dsn, **options)
        path.mkdir(parents=True, exist_ok=True)
        try:
            return clickhouse_connect.get_client(interface="chdb", path=str(path), **options)
        except ProgrammingError as exc:
            if "EmbeddedServer" not in str(exc):
                raise
            raise Unreachable(f"the chDB store {path} is open in another process (chDB allows "
                              "one per directory): stop it, or query through the running sink "
                              "with `pushcascade sql`; check CLICKHOUSE_DSN") from None
    if dsn.startswith(("http://", "https://")):
        url = urlsplit(dsn)
        where = f"{url.scheme}://{url.hostname}:{url.port or 8123}"  # never the password
        quiet = [logging.getLogger(n) for n in ("clickhouse_connect", "urllib3")]
        levels = [log.level for log in quiet]
        for log in quiet:  # their own lines would come before the one that says what to check
            log.setLevel(logging.CRITICAL)
        try:
            return clickhouse_connect.get_client(dsn=dsn, connect_timeout=timeout, **options)
        except OperationalError as exc:
            text = str(exc)
            reason = next((r for r in ("Connection refused", "timed out", "Name or service")
                           if r in text), text.strip()[:100] or "no answer")
            raise Unreachable(f"ClickHouse at {where} did not answer within {timeout:g}s "
                              f"({reason}); check CLICKHOUSE_DSN") from None
        finally:
            for log, level in zip(quiet, levels, strict=True):
                log.setLevel(level)
    raise ValueError(f"CLICKHOUSE_DSN={shown(dsn)!r}: expected chdb:///dir, chdb://memory or "
                     "http://...")
