"""Read-only SQL on the delivery tables, wherever they are.

On a ClickHouse server any number of processes query directly. Embedded chDB allows one
process per data directory: the sink owns it and answers read-only SQL over HTTP on
`PUSHCASCADE_SQL_PORT`, announcing itself in `<chdb dir>/pushcascade-sql.json`. `open_warehouse`
picks the owner when there is one, else opens the store itself."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
from clickhouse_connect.driver.exceptions import DatabaseError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.clickhouse.client import chdb_dir, client, database, shown

OWNER_FILE = "pushcascade-sql.json"
#: Statements answered: they read. A server also gets readonly=1 per query; chDB cannot take it
#: per query (its client SETs it on the shared session and cannot unset it), so there the
#: statement kind is what is checked.
READING = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_COMMENTS = re.compile(r"(--[^\n]*\n|/\*.*?\*/|\s)+", re.S)
#: Output formats `pushcascade sql` offers, by their ClickHouse names.
FORMATS = {"pretty": "PrettyCompactMonoBlock", "csv": "CSVWithNames", "tsv": "TSVWithNames",
           "json": "JSONEachRow", "markdown": "Markdown"}


class QueryError(RuntimeError):
    """ClickHouse refused the query (its message says why)."""


class Warehouse(Protocol):
    """Read-only queries on the delivery tables."""

    where: str

    def text(self, sql: str, fmt: str) -> str:
        """The result in a ClickHouse output format."""
        ...

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The result as one dict per row."""
        ...


def reading(sql: str) -> str:
    """The statement if it only reads (one statement, a reading kind); QueryError otherwise."""
    body = _COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    first = body.split(None, 1)[0].upper() if body else ""
    if first not in READING or ";" in body or "INTO OUTFILE" in body.upper():
        raise QueryError("read-only: one SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS "
                         "statement is answered here; change tables with `pushcascade migrate`")
    return sql


class Direct:
    """Queries through a clickhouse-connect client, read-only."""

    def __init__(self, ch: Any, where: str, server: bool = False) -> None:
        self.ch, self.where = ch, where
        self.settings = {"readonly": 1} if server else {}

    def text(self, sql: str, fmt: str) -> str:
        """The result in a ClickHouse output format."""
        try:
            return bytes(self.ch.raw_query(reading(sql), fmt=fmt,
                                           settings=self.settings)).decode()
        except QueryError:
            raise
        except Exception as exc:
            raise QueryError(_first_line(exc)) from None

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The result as one dict per row."""
        try:
            result = self.ch.query(reading(sql), settings=self.settings)
        except QueryError:
            raise
        except Exception as exc:
            raise QueryError(_first_line(exc)) from None
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


class Remote:
    """Queries answered by the process that owns an embedded store."""

    def __init__(self, url: str) -> None:
        self.url, self.where = url, f"the sink's SQL endpoint {url}"

    def text(self, sql: str, fmt: str) -> str:
        """The result in a ClickHouse output format."""
        try:
            response = httpx.post(f"{self.url}/query", params={"format": fmt}, content=sql,
                                  timeout=120)
        except httpx.HTTPError as exc:
            raise QueryError(f"{self.url} did not answer: {exc}") from None
        if response.status_code != 200:
            raise QueryError(response.text.strip())
        return response.text

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The result as one dict per row."""
        return [json.loads(line) for line in self.text(sql, "JSONEachRow").splitlines() if line]


def owner_url(dsn: str) -> str | None:
    """The SQL endpoint of the live process owning this chDB store, if one announced itself."""
    folder = chdb_dir(dsn)
    path = folder / OWNER_FILE if folder else None
    if path is None or not path.exists():
        return None
    try:
        owner = json.loads(path.read_text())
        os.kill(int(owner["pid"]), 0)
    except (ValueError, KeyError, OSError):
        return None  # a stale file: its process is gone
    return str(owner["url"])


def open_warehouse(dsn: str) -> Warehouse:
    """The owner's endpoint for a chDB store in use, else a direct read-only client."""
    url = owner_url(dsn)
    if url is not None:
        return Remote(url)
    try:
        ch = client(dsn, database(dsn))
    except DatabaseError as exc:
        if "UNKNOWN_DATABASE" not in str(exc):
            raise
        raise QueryError(f"no delivery tables at CLICKHOUSE_DSN={dsn.split('@')[-1]} yet: run "
                         "`pushcascade migrate up`, or start the sink") from None
    return Direct(ch, shown(dsn), is_server(dsn))


def is_server(dsn: str) -> bool:
    """Whether the DSN names a ClickHouse server (not embedded chDB)."""
    return dsn.startswith(("http://", "https://"))


@contextmanager
def announced(dsn: str, url: str) -> Iterator[None]:
    """Announce this process as the SQL endpoint of its chDB store while the block runs."""
    folder = chdb_dir(dsn)
    if folder is None:
        yield
        return
    path = Path(folder) / OWNER_FILE
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def sql_app(warehouse: Direct) -> Starlette:
    """POST /query?format=F with the SQL as body: the read-only result, or 400 and why."""

    async def query(request: Request) -> Response:
        sql = (await request.body()).decode("utf-8", "replace").strip()
        fmt = request.query_params.get("format", "TSVWithNames")
        if not sql:
            return PlainTextResponse("empty query: send the SQL as the request body", 400)
        try:
            return PlainTextResponse(await run_in_threadpool(warehouse.text, sql, fmt))
        except QueryError as exc:
            return PlainTextResponse(str(exc), 400)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/query", query, methods=["POST"]),
                             Route("/healthz", health)])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "DB::Exception" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(exc).__name__
