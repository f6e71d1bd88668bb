"""The dispatcher: every send on push.sends handed to its provider at most once, with one
recorded outcome on push.outcomes.

Per batch of sends: repeats of a send_id already done (or in flight) are skipped; an intent
record for each new send is acknowledged by the broker *before* its provider is called; the
outcome follows. A send whose intent is in the log without an outcome was interrupted by a
crash: the next owner of its partition records it FAILED (`interrupted`) instead of handing it
over a second time (the router's deadlines escalate it). Offsets are committed only past
sends whose outcome the broker acknowledged (connectors/offsets.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from aiobreaker import CircuitBreaker, CircuitBreakerError
from aiolimiter import AsyncLimiter
from confluent_kafka import KafkaError, Message, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay
from tenacity.wait import wait_base

from connectors.adapters import Delivery, ProviderError, UnknownTarget
from connectors.adapters.registry import Registry
from connectors.addresses import AddressBook
from connectors.metrics import (
    BREAKER,
    DEAD_LETTERS,
    DISPATCHED,
    IN_FLIGHT,
    LATENCY,
    REPEATS,
    RETRIES,
)
from connectors.offsets import OffsetTracker
from connectors.settings import ConnectorSettings
from connectors.tokens import AckToken, Signer
from schemas import Codec, SchemaError
from streams.domain.records import dead_letter
from streams.follow import read_to_end
from streams.kafka import consumer, producer
from streams.metrics import Flow, confluent_lag
from streams.settings import Settings

log = logging.getLogger(__name__)

SENDS, OUTCOMES, INTENTS = "push.sends", "push.outcomes", "pushcascade.dispatch-intents"
BATCH = 500
#: Sends taken per in-flight slot before the dispatcher stops reading (bounded memory).
BACKLOG = 4


def retryable(exc: BaseException) -> bool:
    """Whether a provider call is worth repeating: a retryable vendor error, a transport error,
    or the provider's circuit being open (it is tried again when the circuit half-opens)."""
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, httpx.TransportError | CircuitBreakerError)


class Backoff(wait_base):
    """Exponential backoff with full jitter, never shorter than the vendor's Retry-After."""

    def __init__(self, first: float, longest: float) -> None:
        self.first, self.longest = first, longest

    def __call__(self, retry_state: Any) -> float:
        ceiling = min(self.longest, self.first * 2 ** (retry_state.attempt_number - 1))
        wait = random.uniform(0, ceiling)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        return max(wait, min(after, self.longest)) if after else wait


def outcome(send: dict[str, Any], provider: str, status: str, attempts: int, latency: float,
            provider_message_id: str | None = None, error_code: str | None = None
            ) -> dict[str, Any]:
    """The ProviderOutcome record of a send."""
    return {"send_id": send["send_id"], "message_id": send["message_id"],
            "account_id": send["account_id"], "channel": send["channel"],
            "device_id": send.get("device_id"), "route": send.get("route"),
            "provider": provider, "status": status, "provider_message_id": provider_message_id,
            "error_code": error_code, "attempts": attempts,
            "latency_ms": round(latency * 1000), "at": round(time.time() * 1000)}


class Dispatcher:
    """Consumes push.sends in a consumer group and calls the providers."""

    def __init__(self, settings: Settings, config: ConnectorSettings, registry: Registry,
                 codec: Codec | None = None) -> None:
        self.settings, self.config, self.registry = settings, config, registry
        self.codec = codec or Codec(settings.connections.schema_registry_url or None)
        self.signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
        self.addresses = AddressBook(settings, self.codec)
        bootstrap = settings.connections.kafka_bootstrap_servers
        prefix = settings.tuning.topic_prefix
        self.consumer = consumer(bootstrap, f"{prefix}pushcascade-dispatch")
        self.reader = consumer(bootstrap, f"{prefix}pushcascade-dispatch-log")
        self.producer = producer(bootstrap)
        self.flow = Flow("dispatch")
        self.tracker = OffsetTracker()
        self.done: set[str] = set()  # send_ids with a recorded outcome
        self.in_flight: dict[str, list[tuple[int, int]]] = {}  # send_id -> its records
        self.sem = asyncio.Semaphore(config.dispatch_in_flight)
        self.limiters: dict[str, AsyncLimiter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="dispatch-kafka")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # done / in_flight between the loop and rebalance calls
        self.assigned: set[int] = set()  # partitions, kept by the rebalance callbacks

    def ready(self) -> bool:
        """Addresses read to their end and partitions assigned: sends can be handled."""
        return self.addresses.ready.is_set() and bool(self.assigned)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set, then finish what is in flight and commit."""
        self.loop = loop = asyncio.get_running_loop()
        self.addresses.start()
        await loop.run_in_executor(self.pool, self.addresses.ready.wait)
        self.consumer.subscribe([self.topic(SENDS)], on_assign=self._assigned,
                                on_revoke=self._revoked, on_lost=self._revoked)
        poller = asyncio.create_task(self._poll_producer(stop))
        http = self.registry.client(self.config.dispatch_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        last_commit = last_log = time.monotonic()
        taken = 0
        try:
            while not stop.is_set():
                if len(tasks) >= BACKLOG * self.config.dispatch_in_flight:  # back-pressure
                    await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                    continue
                msgs = await loop.run_in_executor(self.pool, self.consumer.consume, BATCH, 0.1)
                taken += len(msgs)
                if msgs:
                    self.flow.received(self.topic(SENDS), len(msgs))
                if time.monotonic() - last_log > 10:
                    log.info("sends taken %d, in flight %d, waiting for an outcome %d",
                             taken, len(tasks), self.tracker.pending())
                    confluent_lag(self.flow, self.consumer)
                    last_log = time.monotonic()
                new = [s for s in (self._take(m) for m in msgs) if s is not None]
                if new:
                    for send, provider in new:
                        task = asyncio.create_task(self._deliver(http, send, provider))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                if time.monotonic() - last_commit > 0.5:
                    await loop.run_in_executor(self.pool, self._commit)
                    last_commit = time.monotonic()
            if tasks:
                await asyncio.wait(tasks, timeout=30)
            await loop.run_in_executor(self.pool, self.producer.flush, 30)
            await loop.run_in_executor(self.pool, self._commit)
        finally:
            poller.cancel()
            await http.aclose()
            self.consumer.close()
            self.reader.close()
            self.addresses.stop()

    async def _poll_producer(self, stop: asyncio.Event) -> None:
        """Serve delivery reports on the loop (they mark sends done)."""
        while True:
            self.producer.poll(0)
            await asyncio.sleep(0.02)

    def topic(self, name: str) -> str:
        """The prefixed topic name."""
        return self.settings.topic(name)

    # -- one send ----------------------------------------------------------------------------

    def _take(self, msg: Message) -> tuple[dict[str, Any], str] | None:
        """Track a record; the send and its provider when it is new, else None."""
        if msg.error() is not None:
            return None
        p, o = msg.partition() or 0, msg.offset() or 0
        self.tracker.take(p, o)
        try:
            send = self.codec.decode(msg.value(), topic=SENDS)
        except SchemaError as exc:
            self._dead_letter(msg, str(exc))
            return None
        sid = send["send_id"]
        if send["channel"] == "APP" and not send.get("device_id"):
            self.tracker.done(p, o)  # Method A's message-level APP record: the per-device
            return None              # sends beside it are what providers carry
        with self._lock:
            if sid in self.done:
                REPEATS.inc()
                self.tracker.done(p, o)
                return None
            if sid in self.in_flight:
                REPEATS.inc()
                self.in_flight[sid].append((p, o))
                return None
            self.in_flight[sid] = [(p, o)]
        try:
            provider = self.registry.name_for(send["channel"], send.get("route"))
        except UnknownTarget:
            provider = "none"
        return send, provider

    async def _intend(self, send: dict[str, Any], provider: str) -> None:
        """Write the send's intent and wait until the broker has it (just before the first
        provider call, so a crash interrupts only what was in flight)."""
        assert self.loop is not None
        acked: asyncio.Future[None] = self.loop.create_future()

        def delivered(err: KafkaError | None, _: Message) -> None:
            if not acked.done():
                acked.set_exception(RuntimeError(err.str())) if err else acked.set_result(None)

        intent = {k: send.get(k) for k in ("send_id", "message_id", "account_id", "channel",
                                           "device_id", "route")}
        self.flow.sent(self.topic(INTENTS))
        self.producer.produce(self.topic(INTENTS), key=send["account_id"].encode(),
                              value=self.codec.encode("DispatchIntent", {
                                  **intent, "provider": provider,
                                  "at": round(time.time() * 1000)}), on_delivery=delivered)
        await acked

    async def _deliver(self, http: httpx.AsyncClient, send: dict[str, Any],
                       provider: str) -> None:
        """Call the provider (retries, rate limit, circuit breaker) and record the outcome.

        A send waiting between attempts holds no in-flight slot, so a provider that is down
        does not stop the others."""
        started, attempts = time.monotonic(), 0
        try:
            if provider == "none":
                raise ProviderError("unknown_target", retryable=False)
            address = self.addresses.address(send)
            if address is None:
                raise ProviderError("unknown_address", retryable=False)
            adapter = self.registry.adapter(provider)
            delivery = self._delivery(send, address)
            limiter, breaker = self._guards(provider)
            async for attempt in AsyncRetrying(
                    stop=stop_after_delay(self.config.dispatch_hold),
                    wait=Backoff(self.config.dispatch_backoff, self.config.dispatch_backoff_max),
                    retry=retry_if_exception(retryable), reraise=True):
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        RETRIES.labels(provider).inc()
                    async with self.sem, limiter:
                        IN_FLIGHT.inc()
                        try:
                            if attempts == 1:
                                await self._intend(send, provider)
                            accepted = await breaker.call_async(adapter.send, http, delivery)
                        finally:
                            IN_FLIGHT.dec()
            result = outcome(send, provider, "ACCEPTED", attempts,
                             time.monotonic() - started, accepted.provider_message_id)
        except ProviderError as exc:
            status = "FAILED" if exc.retryable else "REJECTED"
            result = outcome(send, provider, status, attempts, time.monotonic() - started,
                             error_code=exc.code)
        except CircuitBreakerError:
            result = outcome(send, provider, "FAILED", attempts, time.monotonic() - started,
                             error_code="circuit_open")
        except httpx.TimeoutException:
            result = outcome(send, provider, "FAILED", attempts, time.monotonic() - started,
                             error_code="timeout")
        except httpx.HTTPError as exc:
            result = outcome(send, provider, "FAILED", attempts, time.monotonic() - started,
                             error_code=f"transport:{type(exc).__name__}")
        if provider in self.breakers:
            state = self.breakers[provider].current_state.name.upper()
            BREAKER.labels(provider).set(2 if state == "OPEN" else 1 if "HALF" in state else 0)
        LATENCY.labels(provider).observe(time.monotonic() - started)
        self._record(result)

    def _delivery(self, send: dict[str, Any], address: str) -> Delivery:
        """The send with its address and signed read link and receipt token."""
        read = self.signer.sign(AckToken.for_send("READ", send))
        receipt = self.signer.sign(AckToken.for_send("RECEIPT", send))
        return Delivery(send, address, f"{self.config.gateway_url}/r/{read}", receipt)

    def _guards(self, provider: str) -> tuple[AsyncLimiter, CircuitBreaker]:
        """The provider's rate limiter and circuit breaker (made on first use)."""
        if provider not in self.limiters:
            self.limiters[provider] = AsyncLimiter(self.config.dispatch_rate, 1.0)
            self.breakers[provider] = CircuitBreaker(
                fail_max=self.config.breaker_failures,
                timeout_duration=timedelta(seconds=self.config.breaker_reset),
                exclude=[lambda e: isinstance(e, ProviderError) and not e.retryable],
                name=provider)
        return self.limiters[provider], self.breakers[provider]

    def _record(self, result: dict[str, Any]) -> None:
        """Produce the outcome; its delivery report marks the send's records done."""
        sid = result["send_id"]

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                log.warning("outcome of %s not written (%s): again", sid, err.str())
                self._record(result)
                return
            DISPATCHED.labels(result["provider"], result["status"]).inc()
            with self._lock:
                self.done.add(sid)
                for p, o in self.in_flight.pop(sid, []):
                    self.tracker.done(p, o)

        self.flow.sent(self.topic(OUTCOMES))
        self.producer.produce(self.topic(OUTCOMES), key=result["account_id"].encode(),
                              value=self.codec.encode("ProviderOutcome", result),
                              on_delivery=delivered)

    def _dead_letter(self, msg: Message, error: str) -> None:
        """An undecodable send: to push.dlq, then its record is done."""
        DEAD_LETTERS.inc()
        p, o = msg.partition() or 0, msg.offset() or 0

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is None:
                self.tracker.done(p, o)

        self.flow.sent(self.topic("push.dlq"))
        self.producer.produce(self.topic("push.dlq"), key=msg.key() or b"",
                              value=self.codec.encode("DeadLetter", dead_letter(
                                  msg.key(), msg.value(), msg.topic() or "", p, o, error,
                                  time.time())),
                              on_delivery=delivered)

    # -- offsets and rebalances (called on the Kafka thread) ----------------------------------

    def _commit(self) -> None:
        """Commit every partition up to its first send without a recorded outcome."""
        points = self.tracker.committable()
        if points:
            topic = self.topic(SENDS)
            try:
                self.consumer.commit(offsets=[TopicPartition(topic, p, o)
                                              for p, o in points.items()], asynchronous=False)
            except Exception as exc:  # no assignment any more, or the group moved on
                log.info("commit skipped: %s", exc)

    def _assigned(self, _: Any, partitions: list[TopicPartition]) -> None:
        """New partitions: learn their done and interrupted sends before reading them."""
        mine = sorted(tp.partition for tp in partitions)
        self.assigned = set(mine)
        logs = [TopicPartition(self.topic(t), p, -2) for t in (OUTCOMES, INTENTS) for p in mine]
        intents: dict[str, dict[str, Any]] = {}
        outcomes: set[str] = set()

        def read(msg: Message) -> None:
            topic = (msg.topic() or "")[len(self.settings.tuning.topic_prefix):]
            try:
                record = self.codec.decode(msg.value(), topic=topic)
            except SchemaError:
                return
            (outcomes.add(record["send_id"]) if topic == OUTCOMES
             else intents.setdefault(record["send_id"], record))

        read_to_end(self.reader, logs, read, timeout=120)
        self.reader.unassign()
        interrupted = [i for sid, i in intents.items() if sid not in outcomes]
        for intent in interrupted:
            result = outcome(intent, intent["provider"], "FAILED", 0, 0.0,
                             error_code="interrupted")
            self.flow.sent(self.topic(OUTCOMES))
            self.producer.produce(self.topic(OUTCOMES), key=intent["account_id"].encode(),
                                  value=self.codec.encode("ProviderOutcome", result))
            DISPATCHED.labels(intent["provider"], "FAILED").inc()
        if interrupted and self.producer.flush(30):
            raise RuntimeError("outcomes of interrupted sends not acknowledged")
        with self._lock:
            self.done |= outcomes | set(intents)
        log.info("partitions %s: %d sends done, %d interrupted by a crash recorded FAILED",
                 mine, len(outcomes), len(interrupted))

    def _revoked(self, _: Any, partitions: list[TopicPartition]) -> None:
        """Partitions leaving: let their sends in flight finish, commit, forget them."""
        gone = {tp.partition for tp in partitions}
        self.assigned -= gone
        deadline = time.monotonic() + 30
        while any(self.tracker.pending(p) for p in gone) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._commit()
        self.tracker.forget(gone)
