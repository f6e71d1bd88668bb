"""Settings of the dispatcher, the ack gateway and the sink: PUSHCASCADE_* (pydantic-settings)."""

from __future__ import annotations

import json
from functools import cached_property
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Secrets that were once published (the old built-in development key, the placeholder of the
#: example Secret): a key containing one of them is refused, whoever set it.
PUBLISHED = ("pushcascade-development-ack-key", "change-me")


class ConnectorSettings(BaseSettings):
    """What the dispatcher, the ack gateway and the sink read from the environment."""

    model_config = SettingsConfigDict(env_prefix="PUSHCASCADE_", extra="ignore")

    gateway_url: str = Field("http://127.0.0.1:8791",
                             description="public base URL of the ack gateway (read links)")
    gateway_host: str = Field("127.0.0.1", description="ack gateway listen address")
    gateway_port: int = Field(8791, ge=0, description="ack gateway listen port")
    gateway_admin_host: str = Field("127.0.0.1", description="listen address of the gateway's "
                                    "private port (/metrics, /openapi.json)")
    gateway_admin_port: int = Field(0, ge=0, description="the gateway's private port (0: none)")
    gateway_client_rate: float = Field(100.0, gt=0, description="requests per second one client "
                                       "address may make to the gateway (429 beyond)")
    gateway_token_rate: float = Field(10.0, gt=0, description="requests per minute on one read "
                                      "token (429 beyond)")
    gateway_read_timeout: float = Field(10.0, gt=0, description="seconds a client may take to "
                                        "send a request before the gateway closes it")
    gateway_keep_alive: float = Field(5.0, gt=0, description="seconds an idle keep-alive "
                                      "connection stays open")
    link_hosts: str = Field("", description="hosts a read link may lead to, comma-separated "
                            "('.example.com' takes its subdomains too); empty: any https host")
    ack_keys: SecretStr = Field(SecretStr(""), description='signing keys as JSON {"key id": '
                                '"secret", ...}; no default: the embedded stack makes one per run')
    ack_key_id: str = Field("", description="key id that signs new tokens; required with "
                            "several keys (rotation: verify first, then sign)")
    ack_token_ttl: float = Field(7 * 86400.0, gt=0, description="lifetime of a read/receipt "
                                 "token, seconds")
    ack_max_body: int = Field(65536, gt=0, description="largest callback body accepted, bytes")
    dispatch_in_flight: int = Field(500, gt=0, description="provider requests in flight")
    dispatch_rate: float = Field(1000.0, gt=0, description="requests/s per provider")
    dispatch_hold: float = Field(60.0, gt=0, description="seconds a send keeps being retried "
                                 "through retryable errors and an open circuit before FAILED")
    dispatch_backoff: float = Field(0.2, gt=0, description="first retry wait, seconds "
                                    "(doubling, with jitter)")
    dispatch_backoff_max: float = Field(5.0, gt=0, description="longest retry wait, seconds")
    dispatch_dedupe_window: float = Field(
        86400.0, gt=0, description="seconds a send_id with an outcome is remembered: a repeat "
        "of it on push.sends within this is skipped; a new owner of a partition reads its "
        "intents and outcomes of this long ago only")
    dispatch_static_membership: bool = Field(
        False, description="join the dispatch group as a static member (group.instance.id): a "
        "restarted dispatcher gets its partitions back without a rebalance. Off by default: "
        "Tansu 0.6 never evicts a static member that died (README); on for Apache Kafka")
    dispatch_group_instance_id: str = Field(
        "", description="the static member's id, unique per dispatcher and stable across its "
        "restarts (empty: dispatch-<hostname>; set it when several dispatchers share a host)")
    breaker_failures: int = Field(20, gt=0, description="consecutive failures that open a "
                                  "provider's circuit")
    breaker_reset: float = Field(10.0, gt=0, description="seconds an open circuit waits before "
                                 "one trial request")
    dispatch_metrics_port: int = Field(0, ge=0, description="Prometheus port of the dispatcher "
                                       "(0: none)")
    sink_batch_rows: int = Field(50_000, gt=0, description="rows buffered before the sink "
                                 "inserts (ClickHouse: 10k-100k per insert)")
    sink_flush_interval: float = Field(1.0, gt=0, description="longest a row waits in the sink, "
                                       "seconds (about one insert per second per table)")
    sink_backoff: float = Field(0.5, gt=0, description="first wait after a failed insert, "
                                "seconds (doubling)")
    sink_backoff_max: float = Field(10.0, gt=0, description="longest wait between insert tries")
    sink_metrics_port: int = Field(0, ge=0, description="Prometheus port of the sink (0: none)")
    sql_host: str = Field("127.0.0.1", description="listen address of the sink's read-only SQL "
                          "endpoint (embedded chDB only)")
    sql_port: int = Field(8792, ge=0, description="port of the sink's read-only SQL endpoint")
    priors_interval: float = Field(300.0, ge=0, description="the sink recomputes route priors "
                                   "this often, seconds (0: never)")
    priors_min_samples: int = Field(50, gt=0, description="sends a manufacturer's (or model's) "
                                    "route needs before its rate becomes a prior")
    priors_window: float = Field(86400.0, ge=0, description="route priors count the sends of "
                                 "this many seconds before the newest (a receipt deadline's "
                                 "worth, whose receipts may still come); 0: all history")
    priors_half_life: float = Field(600.0, ge=0, description="a send weighs 1/2 per this many "
                                    "seconds of its age in the fleet's rate of a route, so a "
                                    "route that fails across the fleet drops out and, unused, "
                                    "comes back within a few of them; a manufacturer's or "
                                    "model's rate against the fleet's counts every send of the "
                                    "window (0: every send weighs the same)")

    @classmethod
    def from_env(cls) -> ConnectorSettings:
        """The settings read from the environment."""
        return cls(**{})

    @model_validator(mode="after")
    def _keys_parse(self) -> ConnectorSettings:
        if not self.ack_keys.get_secret_value():
            return self  # checked by `keys`, where a command signs or verifies
        keys = self.keys
        if len(keys) > 1 and not self.ack_key_id:
            raise ValueError(f"PUSHCASCADE_ACK_KEYS holds {len(keys)} keys: name the one that "
                             "signs in PUSHCASCADE_ACK_KEY_ID (a new key is added everywhere "
                             "first, to verify, and signs only once named: deploy/RUNBOOK.md)")
        if self.ack_key_id and self.ack_key_id not in keys:
            raise ValueError(f"PUSHCASCADE_ACK_KEY_ID={self.ack_key_id!r} is not among the "
                             f"PUSHCASCADE_ACK_KEYS ids {sorted(keys)}")
        return self

    @cached_property
    def keys(self) -> dict[str, str]:
        """The signing keys by id (the secrets themselves: never log this)."""
        if not self.ack_keys.get_secret_value():
            raise ValueError('PUSHCASCADE_ACK_KEYS is not set: give it {"key id": "secret of 32+ '
                             'characters"} (e.g. from `openssl rand -base64 33`)')
        try:
            keys = json.loads(self.ack_keys.get_secret_value())
        except json.JSONDecodeError as exc:
            raise ValueError(f"PUSHCASCADE_ACK_KEYS is not JSON: {exc.msg}") from None
        if not isinstance(keys, dict) or not keys or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) >= 32
                for k, v in keys.items()):
            raise ValueError('PUSHCASCADE_ACK_KEYS must be {"key id": "secret of 32+ characters"}')
        published = [k for k, v in keys.items() if any(p in v.lower() for p in PUBLISHED)]
        if published:
            raise ValueError(f"PUSHCASCADE_ACK_KEYS: key {published[0]!r} is a published "
                             "placeholder or development key; generate a secret of your own")
        return keys

    def allows_link(self, link: str | None) -> bool:
        """Whether a read link may be redirected to: https with a host, in PUSHCASCADE_LINK_HOSTS
        when that is set (never javascript:, data: or plain http)."""
        if not link:
            return False
        url = urlsplit(link)
        host = (url.hostname or "").lower()
        if url.scheme != "https" or not host:
            return False
        hosts = [h.strip().lower() for h in self.link_hosts.split(",") if h.strip()]
        return not hosts or any(host == h or (h.startswith(".") and host.endswith(h))
                                for h in hosts)

    @property
    def signing_key_id(self) -> str:
        """The id of the key new tokens are signed with: the named one, or the only one."""
        return self.ack_key_id or next(iter(self.keys))
