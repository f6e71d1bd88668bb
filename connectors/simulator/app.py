"""The simulator's ASGI app: every vendor under /{vendor}, and the control API under /_control."""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from connectors.simulator.behaviour import LogNormal
from connectors.simulator.core import Simulator
from connectors.simulator.journal import Journal
from connectors.simulator.vendors import VENDORS


def _vendor_routes(sim: Simulator) -> list[BaseRoute]:
    mounts: list[BaseRoute] = []
    for name in VENDORS:
        try:
            module = importlib.import_module(f"connectors.simulator.vendors.{name}")
        except ModuleNotFoundError:
            continue
        mounts.append(Mount(f"/{name}", routes=module.routes(sim)))
    return mounts


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None


def _plain(value: Any) -> Any:
    """JSON-ready: a log-normal delay as {median, p90}, containers walked."""
    if isinstance(value, LogNormal):
        return {"median": value.median, "p90": value.p90}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def control_routes(sim: Simulator) -> list[BaseRoute]:
    """GET/PUT/DELETE of behaviours, the population, tokens and the sends seen."""

    async def state(request: Request) -> Response:
        return JSONResponse({"seed": sim.seed,
                             "behaviours": {k: vars(v) for k, v in sim.behaviours.items()},
                             "population": _plain({k: v for k, v
                                                   in vars(sim.population).items()
                                                   if k != "by_address"})})

    async def put_behaviour(request: Request) -> Response:
        try:
            new = sim.set_behaviour(request.path_params["name"], await _json(request))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(vars(new))

    async def reset_behaviour(request: Request) -> Response:
        sim.behaviours.pop(request.path_params["name"].upper(), None)
        return Response(status_code=204)

    async def put_population(request: Request) -> Response:
        try:
            sim.set_population(await _json(request))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(status_code=204)

    async def sends(request: Request) -> Response:
        return JSONResponse(sim.snapshot())

    async def clear_sends(request: Request) -> Response:
        sim.seen.clear()
        sim.accepted.clear()
        sim.stats.clear()
        return Response(status_code=204)

    async def expire_tokens(request: Request) -> Response:
        sim.expire_tokens()
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_control/state", state),
        Route("/_control/routes/{name}", put_behaviour, methods=["PUT"]),
        Route("/_control/channels/{name}", put_behaviour, methods=["PUT"]),
        Route("/_control/routes/{name}", reset_behaviour, methods=["DELETE"]),
        Route("/_control/channels/{name}", reset_behaviour, methods=["DELETE"]),
        Route("/_control/population", put_population, methods=["PUT"]),
        Route("/_control/sends", sends),
        Route("/_control/sends", clear_sends, methods=["DELETE"]),
        Route("/_control/tokens/expire", expire_tokens, methods=["POST"]),
        Route("/_control/health", health),
    ]


def create_app(sim: Simulator) -> Starlette:
    """The ASGI app serving sim."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sim.aclose()

    app = Starlette(routes=control_routes(sim) + _vendor_routes(sim), lifespan=lifespan)
    app.add_middleware(Journal, records=sim.journal)
    return app
