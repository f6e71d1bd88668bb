"""Vendor access tokens: cached until shortly before expiry, refreshed once when refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from connectors.adapters.base import Accepted, ProviderError


class TokenExpired(Exception):
    """The vendor said the access token is invalid or expired: refresh it and try once more."""


class TokenCache:
    """An access token cached until shortly before it expires; one refresh at a time."""

    def __init__(self, fetch: Callable[[httpx.AsyncClient], Awaitable[tuple[str, float]]],
                 margin: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch  # returns (token, lifetime in seconds)
        self._margin = margin  # refresh this long before the vendor's expiry
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenCache(cached={self._token is not None})"

    async def get(self, http: httpx.AsyncClient) -> str:
        """A valid access token, fetched when none is cached or it is about to expire."""
        if self._token is not None and self._clock() < self._expires:
            return self._token
        async with self._lock:
            if self._token is None or self._clock() >= self._expires:
                token, lifetime = await self._fetch(http)
                self.fetches += 1
                self._token = token
                self._expires = self._clock() + max(1.0, lifetime - self._margin)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget the token the vendor rejected (a newer one fetched meanwhile is kept)."""
        if self._token == token:
            self._token = None


async def with_token(http: httpx.AsyncClient, cache: TokenCache,
                     call: Callable[[str], Awaitable[Accepted]]) -> Accepted:
    """Run call(token); when it raises TokenExpired, refresh the token and run it once more."""
    token = await cache.get(http)
    try:
        return await call(token)
    except TokenExpired:
        cache.invalidate(token)
    token = await cache.get(http)
    try:
        return await call(token)
    except TokenExpired:
        raise ProviderError("TOKEN_REJECTED", retryable=True,
                            message="access token rejected after a refresh") from None
