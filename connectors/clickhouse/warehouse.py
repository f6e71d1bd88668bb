"""Read-only SQL on the delivery tables, wherever they are.

On a ClickHouse server any number of processes query directly. Embedded chDB allows one
process per data directory: the sink owns it and answers read-only SQL over HTTP on
`PUSHCASCADE_SQL_PORT`, announcing itself in `<chdb dir>/pushcascade-sql.json`. `open_warehouse`
picks the owner when there is one, else opens the store itself."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import clickhouse_connect
import httpx
from clickhouse_connect.driver.exceptions import DatabaseError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.clickhouse.client import chdb_dir, client, database, shown

OWNER_FILE = "pushcascade-sql.json"
#: What ClickHouse itself enforces on every analyst query, on a server and on chDB alike: no
#: write, no DDL, no setting changed (readonly=1 cannot be lifted by the query), no table
#: function (file(), url(), remote(), executable(), s3() ...). readonly=2 would allow file().
READ_ONLY = {"readonly": 1}
#: Statements answered, by the root of ClickHouse's own AST of the one statement sent.
READING = ("SelectWithUnionQuery", "ShowTables", "DescribeQuery", "Explain", "ExistsTableQuery")
REFUSED = ("read-only: one SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS statement is answered "
           "here (no INTO OUTFILE); change tables with `pushcascade migrate`")
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


def reading(ch: Any, sql: str) -> str:
    """The one statement in `sql`, as ClickHouse's own parser formats it, if it only reads;
    QueryError otherwise (several statements, another kind, INTO OUTFILE)."""
    try:
        parsed = ch.query("SELECT formatQuerySingleLine({sql:String})", parameters={"sql": sql},
                          settings=READ_ONLY).result_rows[0][0]
        tree = str(ch.command(f"EXPLAIN AST {parsed}", settings=READ_ONLY))
    except Exception as exc:
        raise QueryError(_first_line(exc)) from None
    lines = tree.splitlines()
    if not lines or lines[0].split(" ", 1)[0] not in READING:
        raise QueryError(REFUSED)
    # INTO OUTFILE is a Literal right under the statement (chDB would write the file)
    if any(line.startswith(" Literal") for line in lines[1:]):
        raise QueryError(REFUSED)
    return str(parsed)


@contextmanager
def read_only(ch: Any) -> Iterator[Any]:
    """A client on the same store that ClickHouse holds to readonly=1 while the block runs: for
    chDB a session of its own, closed after (chDB keeps settings per session and a readonly
    session cannot be made writable again: the sink's stays writable); a server's client as it
    is, since Direct sends READ_ONLY with every query."""
    from clickhouse_connect.driver._chdbclient import ChdbClient

    if not isinstance(ch, ChdbClient):
        yield ch
        return
    session = clickhouse_connect.get_client(interface="chdb", path=ch.path, database=ch.database,
                                            settings=READ_ONLY)
    try:
        yield session
    finally:
        session.close()


class Direct:
    """Queries through a clickhouse-connect client, each held to readonly=1 by ClickHouse."""

    def __init__(self, ch: Any, where: str) -> None:
        self.ch, self.where = ch, where
        self.settings = READ_ONLY

    def text(self, sql: str, fmt: str) -> str:
        """The result in a ClickHouse output format."""
        with read_only(self.ch) as ch:
            statement = reading(ch, sql)
            try:
                return bytes(ch.raw_query(statement, fmt=fmt, settings=READ_ONLY)).decode()
            except Exception as exc:
                raise QueryError(_first_line(exc)) from None

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The result as one dict per row."""
        with read_only(self.ch) as ch:
            statement = reading(ch, sql)
            try:
                result = ch.query(statement, settings=READ_ONLY)
            except Exception as exc:
                raise QueryError(_first_line(exc)) from None
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


class Remote:
    """Queries answered by the process that owns an embedded store (with its token)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.where = url, f"the sink's SQL endpoint {url}"
        self._headers = {"Authorization": f"Bearer {token}"}

    def __repr__(self) -> str:
        return f"Remote(url={self.url!r})"

    def text(self, sql: str, fmt: str) -> str:
        """The result in a ClickHouse output format."""
        try:
            response = httpx.post(f"{self.url}/query", params={"format": fmt}, content=sql,
                                  headers=self._headers, timeout=120)
        except httpx.HTTPError as exc:
            raise QueryError(f"{self.url} did not answer: {exc}") from None
        if response.status_code != 200:
            raise QueryError(response.text.strip())
        return response.text

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """The result as one dict per row."""
        return [json.loads(line) for line in self.text(sql, "JSONEachRow").splitlines() if line]


def owner(dsn: str) -> dict[str, Any] | None:
    """The live process owning this chDB store, if one announced itself: its url and token."""
    folder = chdb_dir(dsn)
    path = folder / OWNER_FILE if folder else None
    if path is None or not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
        os.kill(int(found["pid"]), 0)
        return {"url": str(found["url"]), "token": str(found["token"])}
    except (ValueError, KeyError, OSError):
        return None  # a stale file: its process is gone (or one unreadable to this user)


def owner_url(dsn: str) -> str | None:
    """The SQL endpoint of the live process owning this chDB store, if one announced itself."""
    found = owner(dsn)
    return None if found is None else found["url"]


def open_warehouse(dsn: str) -> Warehouse:
    """The owner's endpoint for a chDB store in use, else a direct read-only client."""
    found = owner(dsn)
    if found is not None:
        return Remote(found["url"], found["token"])
    try:
        ch = client(dsn, database(dsn))
    except DatabaseError as exc:
        if "UNKNOWN_DATABASE" not in str(exc):
            raise
        raise QueryError(f"no delivery tables at CLICKHOUSE_DSN={dsn.split('@')[-1]} yet: run "
                         "`pushcascade migrate up`, or start the sink") from None
    return Direct(ch, shown(dsn))


def is_server(dsn: str) -> bool:
    """Whether the DSN names a ClickHouse server (not embedded chDB)."""
    return dsn.startswith(("http://", "https://"))


@contextmanager
def announced(dsn: str, url: str, token: str) -> Iterator[None]:
    """Announce this process as the SQL endpoint of its chDB store while the block runs; its
    token goes in the owner file, readable by the store's owner only (who may read the data)."""
    folder = chdb_dir(dsn)
    if folder is None:
        yield
        return
    path = Path(folder) / OWNER_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "pid": os.getpid(), "token": token}, out)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def sql_token() -> str:
    """A fresh bearer token for the sink's SQL endpoint."""
    return secrets.token_urlsafe(32)


def sql_app(warehouse: Direct, token: str) -> Starlette:
    """POST /query?format=F with the SQL as body and the owner file's bearer token: the
    read-only result, 400 and why, or 401 without the token."""
    expected = f"Bearer {token}".encode()

    async def query(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            return PlainTextResponse("the SQL endpoint needs the token of its owner file "
                                     f"({OWNER_FILE}): use `pushcascade sql`", 401)
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
