"""HTTP plumbing shared by the adapters: one request, JSON answers, and mapping vendor errors."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.adapters.access import TokenExpired
from connectors.adapters.base import ProviderError

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after(headers: Mapping[str, str], default: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); default when absent."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def classify(code: str, status: int, headers: Mapping[str, str], *, message: str = "",
             refresh: Collection[str] = (), retryable: Collection[str] = (),
             wait: float | None = None) -> Exception:
    """A vendor error code as TokenExpired (refresh and retry once), or a ProviderError that is
    retryable (a code in retryable, or HTTP 408/429/5xx; retry_after from the headers, else
    wait) or permanent."""
    if code in refresh:
        return TokenExpired(code)
    again = code in retryable or status in RETRYABLE_STATUS
    return ProviderError(code, retryable=again,
                         retry_after=retry_after(headers, wait) if again else None,
                         message=message)


def status_error(response: httpx.Response, code: str | None = None) -> ProviderError:
    """The generic mapping of an HTTP error status: 408/429/5xx retryable, other 4xx not."""
    status = response.status_code
    return ProviderError(code or f"HTTP_{status}", retryable=status in RETRYABLE_STATUS,
                         retry_after=retry_after(response.headers), message=f"HTTP {status}")


def auth_error(code: Any, status: int, message: Any = "") -> ProviderError:
    """A refused access-token request: AUTH_<code>, retryable only on HTTP 408/429/5xx."""
    return ProviderError(f"AUTH_{code}", retryable=status in RETRYABLE_STATUS,
                         message=str(message or ""))


#: Transport errors raised before any byte of the request could reach the vendor: no connection
#: (refused, DNS, connect timeout, TLS handshake), no free connection in the pool, a request
#: the client could not build. Every other transport error (read or write timeout, connection
#: reset or closed mid-exchange) may come after the vendor got the request: ambiguous.
NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError,
    httpx.UnsupportedProtocol, httpx.LocalProtocolError)


async def request(http: httpx.AsyncClient, method: str, url: str, *, sends: bool = True,
                  **kwargs: Any) -> httpx.Response:
    """Make one HTTP request; timeouts and connection failures become retryable ProviderErrors,
    `ambiguous` when the request may have reached the vendor and it `sends` the push (False for
    access-token requests: their failures never leave a push's fate unknown)."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        code = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "UNREACHABLE"
        raise ProviderError(code, retryable=True, message=type(exc).__name__,
                            ambiguous=sends and not isinstance(exc, NOT_SENT)) from None


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object; a non-JSON answer maps by HTTP status."""
    try:
        value = response.json()
    except ValueError:
        raise status_error(response) from None
    if not isinstance(value, dict):
        raise status_error(response)
    return value


async def oauth2_token(http: httpx.AsyncClient, url: str,
                       form: Mapping[str, str]) -> tuple[str, float]:
    """POST an OAuth2 token request (RFC 6749 form); the access token and its lifetime."""
    response = await request(http, "POST", url, data=form, sends=False)
    body = json_body(response)
    if response.status_code != 200 or "access_token" not in body:
        raise auth_error(body.get("error", response.status_code), response.status_code,
                         body.get("error_description"))
    return str(body["access_token"]), float(body.get("expires_in", 3600))
