"""The adapter registry: which adapter serves a send's channel (account-level) or route (APP)."""

from __future__ import annotations

import importlib
from typing import Any

import httpx

from connectors.adapters.base import Adapter, UnknownTarget
from connectors.adapters.config import ProviderConfig
from connectors.adapters.transport import AiohttpTransport, Client

# adapter name -> "module:Class"; each class is built as Class(vendor_settings, base_url)
ADAPTERS: dict[str, str] = {
    "fcm": "connectors.adapters.fcm:FcmAdapter",
    "apns": "connectors.adapters.apns:ApnsAdapter",
    "huawei": "connectors.adapters.huawei:HuaweiAdapter",
    "xiaomi": "connectors.adapters.xiaomi:XiaomiAdapter",
    "oppo": "connectors.adapters.oppo:OppoAdapter",
    "vivo": "connectors.adapters.vivo:VivoAdapter",
    "jpush": "connectors.adapters.jpush:JpushAdapter",
    "getui": "connectors.adapters.getui:GetuiAdapter",
    "wechat": "connectors.adapters.wechat:WechatAdapter",
    "sms": "connectors.adapters.sms:SmsAdapter",
    "email": "connectors.adapters.email:EmailAdapter",
}


def build(name: str, config: ProviderConfig) -> Adapter:
    """Construct the adapter called name from its settings and base URL."""
    if name not in ADAPTERS:
        raise UnknownTarget(f"no adapter called {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    problem = config.credentials_problem(name)
    if problem:
        raise ValueError(problem)
    module, _, cls = ADAPTERS[name].partition(":")
    factory: Any = getattr(importlib.import_module(module), cls)
    adapter: Adapter = factory(config.vendors[name], config.base_url(name))
    return adapter


class Registry:
    """Adapters by name, and the lookup of the adapter for a (channel, route)."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.routes = config.pairs(config.routes)
        self.channels = config.pairs(config.channels)
        for key, name in {**self.routes, **self.channels}.items():
            if name not in ADAPTERS:
                raise ValueError(f"{key}={name}: no adapter called {name!r}; "
                                 f"known: {', '.join(sorted(ADAPTERS))}")
        self._adapters: dict[str, Adapter] = {}

    def __repr__(self) -> str:
        return f"Registry(routes={self.routes}, channels={self.channels})"

    @property
    def names(self) -> list[str]:
        """Every adapter name some route or channel is served by."""
        return sorted(set(self.routes.values()) | set(self.channels.values()))

    def check_credentials(self) -> None:
        """ValueError naming the setting when a configured provider would be called with a
        development credential (fail closed: only the simulator accepts those)."""
        for name in self.names:
            problem = self.config.credentials_problem(name)
            if problem:
                raise ValueError(problem)

    def adapter(self, name: str) -> Adapter:
        """The adapter called name (built once); UnknownTarget when there is none."""
        if name not in self._adapters:
            self._adapters[name] = build(name, self.config)
        return self._adapters[name]

    def name_for(self, channel: str, route: str | None) -> str:
        """The adapter name for an APP send's route, or an account-level send's channel."""
        if channel == "APP":
            if not route:
                raise UnknownTarget("an APP send needs a route")
            if route.upper() not in self.routes:
                raise UnknownTarget(f"no adapter for route {route!r} "
                                    f"(PUSHCASCADE_PROVIDER_ROUTES: {', '.join(self.routes)})")
            return self.routes[route.upper()]
        if channel not in self.channels:
            raise UnknownTarget(f"no adapter for channel {channel!r} "
                                f"(PUSHCASCADE_PROVIDER_CHANNELS: {', '.join(self.channels)})")
        return self.channels[channel]

    def for_send(self, channel: str, route: str | None) -> Adapter:
        """The adapter that delivers a send on this channel (and route, for APP)."""
        return self.adapter(self.name_for(channel, route))

    def client(self, max_connections: int = 500) -> httpx.AsyncClient:
        """An HTTP client for the adapters: the configured timeout, a bounded connection pool
        (aiohttp's, under httpx's API: connectors/adapters/transport.py)."""
        return Client(timeout=self.config.timeout, transport=AiohttpTransport(max_connections))

    async def aclose(self) -> None:
        """Close adapters that hold their own connections (APNs keeps an HTTP/2 client)."""
        for adapter in self._adapters.values():
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()


def registry(config: ProviderConfig | None = None) -> Registry:
    """The registry for this configuration (default: read from the environment)."""
    return Registry(config or ProviderConfig.from_env())
