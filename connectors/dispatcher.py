"""The dispatcher: every send on push.sends handed to its provider at most once, with exactly
one recorded outcome on push.outcomes.

Per send: repeats of a send_id done within the dedupe window (or in flight) are skipped; an
intent record is acknowledged by the broker *before* each provider call; the outcome follows,
whatever the call raised. Intents and outcomes go to the same partition number as the send, so
a new owner of a partition rebuilds its state from those partitions alone, from the start of
the window, in a background thread while the partition is paused (never inside the rebalance
callback). A send whose intent has no outcome was interrupted: it is re-sent with the same
idempotency key when its vendor drops repeats (dispatch_policy.IDEMPOTENT), else recorded
FAILED/`interrupted` (the provider may have it; a RECEIPT for the send_id makes it delivered).
A call cut off after it may have reached the provider (a read timeout) is settled the same way
at once: repeated only under such a key, else FAILED/`interrupted` (dispatch_policy.retry).

Ownership is checked before each intent, before every retry and before the outcome: the
partition must be assigned and the lease (dispatch_policy.Lease) valid, so a process frozen past
its session does not act for partitions someone else took: after a stall, its lease holds again
only once the group's coordinator has accepted a commit it made (Dispatcher._probe). A revoked
partition's sends get a short grace to finish, then are cancelled; a lost partition's are
cancelled at once. Offsets are committed only past sends whose outcome the broker acknowledged
(connectors/offsets.py). A dispatcher that stops takes no new send, lets those in flight end
while it keeps polling, and leaves the group only once a rebalance in progress has ended
(Dispatcher._settle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
from aiobreaker import CircuitBreaker
from aiolimiter import AsyncLimiter
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay
from tenacity.wait import wait_base

from connectors.adapters import Accepted, Delivery, ProviderError, UnknownTarget
from connectors.adapters.registry import Registry
from connectors.addresses import AddressBook
from connectors.dispatch_policy import (
    INTERRUPTED,
    DedupeWindow,
    Lease,
    Rebalances,
    ambiguous,
    failure,
    first_at_or_after,
    interrupted,
    reconcile,
    retry,
)
from connectors.metrics import (
    BREAKER,
    DEAD_LETTERS,
    DISPATCHED,
    IN_FLIGHT,
    LATENCY,
    REPEATS,
    RETRIES,
    UNKNOWN,
)
from connectors.offsets import OffsetTracker
from connectors.settings import ConnectorSettings
from connectors.tokens import AckToken, Signer
from schemas import Codec, SchemaError
from streams.domain.records import dead_letter
from streams.follow import read_to_end
from streams.kafka import CONSUMER_DEFAULTS, commit_as, consumer, dead_producer, producer
from streams.metrics import Flow, confluent_lag
from streams.settings import Settings

log = logging.getLogger(__name__)

SENDS, OUTCOMES, INTENTS = "push.sends", "push.outcomes", "pushcascade.dispatch-intents"
BATCH = 500
#: Sends taken per in-flight slot before the dispatcher stops reading (bounded memory); it
#: reads again once a batch fits.
BACKLOG = 4
#: Seconds a revoked partition's sends may take to finish before they are cancelled.
REVOKE_GRACE = 2.0
#: Offsets of intents/outcomes a rebuild reads whole before searching for the window's start.
SEARCH_ABOVE = 5000
#: Seconds a stopping dispatcher lets its sends in flight end, then waits for a rebalance in
#: progress to end before it leaves the group.
DRAIN_LIMIT, SETTLE_LIMIT = 30.0, 12.0
#: Seconds before an outcome the broker did not take is produced again.
RECORD_AGAIN = 0.2
#: Seconds between two commits that ask the coordinator, after a stall, whether this member
#: still holds its partitions (Dispatcher._probe).
PROBE_INTERVAL = 0.5

__all__ = ["Backoff", "Dispatcher", "outcome"]


class Lost(Exception):
    """The partition of a send is no longer this process's: stop without an outcome."""


class Backoff(wait_base):
    """Exponential backoff with full jitter, never shorter than the vendor's Retry-After;
    counting attempts from `made` + 1 (those made before tenacity took over)."""

    def __init__(self, first: float, longest: float, made: int = 0) -> None:
        self.first, self.longest, self.made = first, longest, made

    def delay(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1) raised exc."""
        wait = random.uniform(0, min(self.longest, self.first * 2 ** (attempt - 1)))
        after = getattr(exc, "retry_after", None)
        return max(wait, min(after, self.longest)) if after else wait

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return self.delay(self.made + retry_state.attempt_number, exc)


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
        instance = config.dispatch_group_instance_id or f"dispatch-{socket.gethostname()}"
        static = {"group.instance.id": instance} if config.dispatch_static_membership else {}
        self.consumer = consumer(bootstrap, f"{prefix}pushcascade-dispatch", **static)
        # used only to rebuild: answers at once (a window search probes ~20 offsets: 0.3 s
        # against 7.7 s with the default 500 ms fetch wait, measured on Tansu)
        self.reader = consumer(bootstrap, f"{prefix}pushcascade-dispatch-log",
                               **{"fetch.wait.max.ms": 10})
        session = CONSUMER_DEFAULTS["session.timeout.ms"] / 1000
        heartbeat = CONSUMER_DEFAULTS["heartbeat.interval.ms"] / 1000
        # a record queued before a freeze longer than the lease is expired, not sent late
        self._producer_config = {"message.timeout.ms": int((session - 2 * heartbeat) * 1000)}
        self.producer = producer(bootstrap, **self._producer_config)
        self.retired: list[Producer] = []  # replaced producers, polled until their reports end
        # after a stall, the partitions are acted for again only once the coordinator has
        # accepted a commit of this member's (dispatch_policy.Lease, Dispatcher._probe)
        self.lease = Lease(length=session - 2 * heartbeat, gap=3 * heartbeat)
        self._next_probe = 0.0
        self.flow = Flow("dispatch")
        self.tracker = OffsetTracker()
        self.done = DedupeWindow(config.dispatch_dedupe_window)
        self.in_flight: dict[str, list[tuple[int, int]]] = {}  # send_id -> its records
        #: interrupted sends to re-send under their key: send_id -> (partition, when the key
        #: was first used, the calls that may have been made before)
        self.resending: dict[str, tuple[int, float, int]] = {}
        self.sem = asyncio.Semaphore(config.dispatch_in_flight)
        self.limiters: dict[str, AsyncLimiter] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dispatch-kafka")
        self.rebuilder = ThreadPoolExecutor(1, thread_name_prefix="dispatch-rebuild")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()  # the state below, between the loop and the callbacks
        self._epoch = 0
        self.owned: dict[int, int] = {}  # partition -> the assignment epoch it came with
        self.member: str | None = None  # the group member id of the last assignment
        self.loading: dict[int, Future[Any]] = {}  # partitions paused while state is rebuilt
        self.revoking: set[int] = set()
        self.tasks: dict[int, set[asyncio.Task[None]]] = {}
        self.running = 0  # tasks in self.tasks; `room` is set once they are down to
        self.room = asyncio.Event()  # low_water after the backlog was full
        backlog = BACKLOG * config.dispatch_in_flight
        self.low_water = max(backlog // 2, backlog - BATCH)
        self.rebalances = Rebalances(quiet=2 * heartbeat)
        self.stopping = False  # leaving the group: new partitions are not taken

    @property
    def assigned(self) -> set[int]:
        """The partitions this process owns now."""
        return set(self.owned)

    def ready(self) -> bool:
        """Addresses read to their end and partitions assigned: sends can be handled."""
        return self.addresses.ready.is_set() and bool(self.owned)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set, then finish what is in flight and commit."""
        self.loop = loop = asyncio.get_running_loop()
        self.addresses.start()
        await loop.run_in_executor(self.pool, self.addresses.ready.wait)
        self.consumer.subscribe([self.topic(SENDS)], on_assign=self._assigned,
                                on_revoke=self._revoked, on_lost=self._lost)
        poller = asyncio.create_task(self._poll_producer(stop))
        http = self.registry.client(self.config.dispatch_in_flight)
        last_commit = last_log = last_expiry = time.monotonic()
        taken, backlog = 0, BACKLOG * self.config.dispatch_in_flight
        try:
            while not stop.is_set():
                running = self.running
                if running >= backlog:  # back-pressure until a batch fits again (`room`),
                    self.room.clear()  # but polled at least every 0.5 s (the lease and the
                    with contextlib.suppress(TimeoutError):  # group's liveness need it)
                        await asyncio.wait_for(self.room.wait(), 0.5)
                batch = max(1, min(BATCH, backlog - self.running))
                msgs = await loop.run_in_executor(self.pool, self._consume, batch)
                taken += len(msgs)
                if msgs:
                    self.flow.received(self.topic(SENDS), len(msgs))
                now = time.monotonic()
                if now - last_log > 10:
                    log.info("sends taken %d, in flight %d, waiting for an outcome %d, "
                             "done in the window %d", taken, running, self.tracker.pending(),
                             len(self.done))
                    confluent_lag(self.flow, self.consumer)
                    last_log = now
                if now - last_expiry > 10:
                    self.done.expire(time.time())
                    last_expiry = now
                for msg in msgs:
                    taken_send = self._take(msg)
                    if taken_send is not None:
                        self._start(http, *taken_send)
                self._loaded()
                if time.monotonic() - last_commit > 0.5:
                    await loop.run_in_executor(self.pool, self._commit)
                    last_commit = time.monotonic()
            await self._drain(loop, DRAIN_LIMIT)
            await loop.run_in_executor(self.pool, self.producer.flush, 30)
            await loop.run_in_executor(self.pool, self._commit)
            await loop.run_in_executor(self.pool, self._settle, SETTLE_LIMIT)
        finally:
            poller.cancel()
            await http.aclose()
            self.consumer.close()
            self.rebuilder.shutdown(wait=True, cancel_futures=True)  # it reads with `reader`
            self.reader.close()
            self.addresses.stop()

    async def _drain(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        """Stop taking sends and let those in flight end (at most `limit` seconds), polling the
        consumer meanwhile: the lease stays valid, so their outcomes are recorded here rather
        than left interrupted to the partitions' next owner."""
        with self._lock:
            self.stopping = True
        await loop.run_in_executor(self.pool, self._pause)
        deadline = time.monotonic() + limit
        while (pending := {t for ts in self.tasks.values() for t in ts}) and (
                time.monotonic() < deadline):
            await asyncio.wait(pending, timeout=0.2)
            await loop.run_in_executor(self.pool, self._consume, 1)  # paused: nothing taken

    def _pause(self) -> None:
        """Pause every assigned partition (no send is taken any more)."""
        if assigned := self.consumer.assignment():
            self.consumer.pause(assigned)

    def _consume(self, batch: int) -> list[Message]:
        """One poll of push.sends (rebalance callbacks run here); renews the lease."""
        msgs = self.consumer.consume(batch, 0.1)
        self.lease.polled(time.monotonic())
        if self.lease.suspended:
            self._probe()
        return msgs

    def _probe(self) -> None:
        """After a stall: ask the group's coordinator whether this member still holds its
        partitions, by committing their offsets synchronously (every PROBE_INTERVAL). A
        member replaced while it was frozen is refused, and its lease stays suspended until
        librdkafka reports the loss; a commit accepted from the member the partitions were
        assigned to confirms the membership (one accepted from the new member this client became
        after the loss confirms nothing: streams.kafka.commit_as).

        Each partition commits the point past its settled sends, else its committed offset,
        else its first offset (what `auto.offset.reset=earliest` reads anyway): nothing moves
        that a commit by the owner would not."""
        asked_at = time.monotonic()
        if asked_at < self._next_probe:
            return
        self._next_probe = asked_at + PROBE_INTERVAL
        topic = self.topic(SENDS)
        with self._lock:
            owned, member = sorted(self.owned), self.member
            points = {p: o for p, o in self.tracker.committable().items() if p in self.owned}
        if not owned:
            return
        try:
            rest = [TopicPartition(topic, p) for p in owned if p not in points]
            for tp in self.consumer.committed(rest, timeout=5) if rest else ():
                points[tp.partition] = tp.offset if tp.offset >= 0 else \
                    self.consumer.get_watermark_offsets(tp, timeout=5)[0]
            same = commit_as(member, self.consumer,
                             [TopicPartition(topic, p, o) for p, o in points.items()])
        except KafkaException as exc:
            log.warning("after a stall, the group refused this member's commit (%s): its "
                        "partitions stay untouched until the group settles", exc)
            return
        if not same:
            log.warning("after a stall, this client rejoined the group as another member: "
                        "partitions %s stay untouched until they are assigned again", owned)
            return
        self.lease.confirmed(asked_at)
        log.info("after a stall, the group confirmed partitions %s are still this member's",
                 owned)

    async def _poll_producer(self, stop: asyncio.Event) -> None:
        """Serve delivery reports on the loop (they mark sends done)."""
        while True:
            self.producer.poll(0)
            for old in list(self.retired):
                old.poll(0)
                if not len(old):
                    self.retired.remove(old)
            await asyncio.sleep(0.02)

    def _renew(self, failed: Producer, err: KafkaError) -> None:
        """Replace a producer that writes nothing more (dead_producer): its queued records are
        purged, their reports come back as errors and are written again through the new one."""
        with self._lock:
            if failed is not self.producer:
                return  # replaced already
            self.producer = producer(self.settings.connections.kafka_bootstrap_servers,
                                     **self._producer_config)
            self.retired.append(failed)
        log.warning("the producer was fenced or failed (%s): a new one takes its place",
                    err.str())
        failed.purge()

    def topic(self, name: str) -> str:
        """The prefixed topic name."""
        return self.settings.topic(name)

    # -- ownership ---------------------------------------------------------------------------

    def owns(self, partition: int, epoch: int, finishing: bool = False) -> bool:
        """Whether this process may act for the partition it took a send from in `epoch`: still
        assigned (revoking allowed only when `finishing` a call) and the lease valid."""
        with self._lock:
            if self.owned.get(partition) != epoch or partition in self.loading:
                return False
            if partition in self.revoking and not finishing:
                return False
        return self.lease.valid(time.monotonic())

    async def _confirm(self, partition: int, epoch: int, finishing: bool = False) -> None:
        """Wait while the lease is suspended; Lost when the partition is gone."""
        while True:
            if self.owns(partition, epoch, finishing):
                return
            with self._lock:
                gone = self.owned.get(partition) != epoch or (
                    partition in self.revoking and not finishing)
            if gone:
                raise Lost(partition)
            await asyncio.sleep(0.05)

    # -- one send ----------------------------------------------------------------------------

    def _take(self, msg: Message) -> tuple[dict[str, Any], str, int, int] | None:
        """Track a record; the send, its provider, partition and epoch when it is new."""
        error = msg.error()
        if error is not None:
            if error.fatal():  # e.g. another dispatcher joined with our group.instance.id
                raise RuntimeError(f"dispatch consumer failed: {error.str()}")
            return None
        p, o = msg.partition() or 0, msg.offset() or 0
        with self._lock:
            epoch = self.owned.get(p)
            if epoch is None or p in self.loading:
                return None  # fetched before a revoke: the partition's owner reads it again
            self.tracker.take(p, o)
        try:
            send = self.codec.decode(msg.value(), topic=SENDS)
            sid = send["send_id"]
        except (SchemaError, KeyError, TypeError, ValueError) as exc:
            self._dead_letter(msg, str(exc) or type(exc).__name__)
            return None
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
        except Exception as exc:  # a broken registry entry: the send still gets its outcome
            log.warning("no provider for %s: %s", sid, type(exc).__name__)
            provider = "none"
        return send, provider, p, epoch

    def _start(self, http: httpx.AsyncClient, send: dict[str, Any], provider: str,
               partition: int, epoch: int) -> None:
        """Run the send's task, filed under its partition (cancelled when it is lost)."""
        task = asyncio.create_task(self._deliver(http, send, provider, partition, epoch))
        mine = self.tasks.setdefault(partition, set())
        mine.add(task)
        self.running += 1

        def ended(_: asyncio.Task[None]) -> None:
            mine.discard(task)
            self.running -= 1
            if self.running <= self.low_water:
                self.room.set()

        task.add_done_callback(ended)

    async def _intend(self, send: dict[str, Any], provider: str, partition: int) -> None:
        """Write the send's intent and wait until the broker has it (just before each provider
        call, so a crash interrupts only what was in flight, and its successor knows how many
        calls may have been made)."""
        assert self.loop is not None
        acked: asyncio.Future[None] = self.loop.create_future()

        def settle() -> None:
            if not acked.done():
                acked.set_exception(RuntimeError(error)) if error else acked.set_result(None)

        error = ""

        sent_by = self.producer

        def delivered(err: KafkaError | None, _: Message) -> None:  # any thread that polls
            nonlocal error
            error = err.str() if err else ""
            if err is not None and dead_producer(err):
                self._renew(sent_by, err)
            assert self.loop is not None
            self.loop.call_soon_threadsafe(settle)

        intent = {k: send.get(k) for k in ("send_id", "message_id", "account_id", "channel",
                                           "device_id", "route")}
        self.flow.sent(self.topic(INTENTS))
        self.producer.produce(self.topic(INTENTS), partition=partition,
                              key=send["account_id"].encode(),
                              value=self.codec.encode("DispatchIntent", {
                                  **intent, "provider": provider,
                                  "at": round(time.time() * 1000)}), on_delivery=delivered)
        await acked

    async def _deliver(self, http: httpx.AsyncClient, send: dict[str, Any], provider: str,
                       partition: int, epoch: int) -> None:
        """Call the provider (retries, rate limit, circuit breaker) and record the outcome,
        whatever happens; nothing only when the partition was lost (its new owner reconciles).

        A send waiting between attempts holds no in-flight slot, so a provider that is down
        does not stop the others. A call that may have reached the provider without an answer
        (a read timeout) is not repeated unless its vendor drops repeats of the send's
        idempotency key (dispatch_policy.retry); its outcome is then unknown (`interrupted`)."""
        started, attempts = time.monotonic(), 0
        sid = send["send_id"]
        with self._lock:  # an interrupted send re-sent under its key: the key's first use
            _, first_call_at, before = self.resending.pop(sid, (partition, None, 0))
        unsure = first_call_at is not None  # a call may already have reached the provider

        def again(exc: BaseException) -> bool:
            return retry(exc, provider, first_call_at, time.time(), unsure)

        try:
            try:
                if provider == "none":
                    raise ProviderError("unknown_target", retryable=False)
                address = self.addresses.address(send)
                if address is None:
                    raise ProviderError("unknown_address", retryable=False)
                adapter = self.registry.adapter(provider)
                delivery = self._delivery(send, address)
                limiter, breaker = self._guards(provider)

                async def call() -> Accepted:
                    nonlocal attempts, first_call_at, unsure
                    async with self.sem, limiter:
                        await self._confirm(partition, epoch)  # before intent and retries
                        attempts += 1
                        if attempts > 1:
                            RETRIES.labels(provider).inc()
                        IN_FLIGHT.inc()
                        try:
                            await self._intend(send, provider, partition)
                            await self._confirm(partition, epoch)
                            if first_call_at is None:
                                first_call_at = time.time()
                            return await breaker.call_async(adapter.send, http, delivery)
                        except Exception as exc:
                            if ambiguous(exc):
                                unsure = True
                                UNKNOWN.labels(provider).inc()
                            raise
                        finally:
                            IN_FLIGHT.dec()

                try:  # the first attempt without tenacity (most sends need no other)
                    accepted = await call()
                except Exception as exc:
                    if not again(exc):
                        raise
                    accepted = await self._again(call, again, exc, started)
                result = outcome(send, provider, "ACCEPTED", before + attempts,
                                 time.monotonic() - started, accepted.provider_message_id)
            except (Lost, asyncio.CancelledError):
                raise
            except Exception as exc:  # every other ending is an outcome, with its reason
                status, code = failure(exc, unsure)
                if status == "FAILED" and code.startswith("error:"):
                    log.warning("send %s ended by %s", sid, code)
                elif code == INTERRUPTED:
                    log.info("send %s: %s may have it (%s after %d call(s)): outcome unknown",
                             sid, provider, type(exc).__name__, attempts)
                result = outcome(send, provider, status, before + attempts,
                                 time.monotonic() - started, error_code=code)
            if provider in self.breakers:
                state = self.breakers[provider].current_state.name.upper()
                BREAKER.labels(provider).set(2 if state == "OPEN" else 1 if "HALF" in state
                                             else 0)
            LATENCY.labels(provider).observe(time.monotonic() - started)
            await self._confirm(partition, epoch, finishing=True)
            self._record(result, partition, epoch)
        except Lost:
            log.info("send %s: partition %d lost, left to its new owner", send["send_id"],
                     partition)

    async def _again(self, call: Callable[[], Awaitable[Accepted]],
                     again: Callable[[BaseException], bool], failed: BaseException,
                     started: float) -> Accepted:
        """The attempts after a first one that failed retryably, with backoff, until the send
        has been held dispatch_hold seconds (then the last error is raised)."""
        hold = self.config.dispatch_hold
        if time.monotonic() - started >= hold:
            raise failed
        backoff = Backoff(self.config.dispatch_backoff, self.config.dispatch_backoff_max, 1)
        await asyncio.sleep(backoff.delay(1, failed))
        left = max(0.0, hold - (time.monotonic() - started))
        async for attempt in AsyncRetrying(stop=stop_after_delay(left), wait=backoff,
                                           retry=retry_if_exception(again), reraise=True):
            with attempt:
                return await call()
        raise AssertionError("tenacity ended without an answer")  # reraise=True: unreachable

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

    def _record(self, result: dict[str, Any], partition: int, epoch: int) -> None:
        """Produce the outcome; its delivery report marks the send's records done."""
        sid = result["send_id"]

        sent_by = self.producer

        def delivered(err: KafkaError | None, msg: Message) -> None:  # any thread that polls
            if err is not None:
                if dead_producer(err):
                    self._renew(sent_by, err)
                if self.owns(partition, epoch, finishing=True):
                    log.warning("outcome of %s not written (%s): again in %g s", sid,
                                err.str(), RECORD_AGAIN)
                    assert self.loop is not None
                    self.loop.call_soon_threadsafe(self.loop.call_later, RECORD_AGAIN,
                                                   self._record, result, partition, epoch)
                return
            DISPATCHED.labels(result["provider"], result["status"]).inc()
            with self._lock:
                self.done.add(sid, time.time())
                for p, o in self.in_flight.pop(sid, []):
                    self.tracker.done(p, o)

        self.flow.sent(self.topic(OUTCOMES))
        self.producer.produce(self.topic(OUTCOMES), partition=partition,
                              key=result["account_id"].encode(),
                              value=self.codec.encode("ProviderOutcome", result),
                              on_delivery=delivered)

    def _dead_letter(self, msg: Message, error: str) -> None:
        """An undecodable send: to push.dlq, then its record is done."""
        DEAD_LETTERS.inc()
        p, o = msg.partition() or 0, msg.offset() or 0

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is None:
                with self._lock:
                    self.tracker.done(p, o)

        self.flow.sent(self.topic("push.dlq"))
        self.producer.produce(self.topic("push.dlq"), key=msg.key() or b"",
                              value=self.codec.encode("DeadLetter", dead_letter(
                                  msg.key(), msg.value(), msg.topic() or "", p, o, error,
                                  time.time())),
                              on_delivery=delivered)

    # -- offsets and rebalances (called on the Kafka thread) ----------------------------------

    def _settle(self, limit: float) -> bool:
        """Before leaving the group: keep polling, taking nothing, until no rebalance is under
        way and none began for two heartbeats (at most `limit` seconds); whether it settled.

        No member may leave while the group forms (between its JoinGroup and SyncGroup): Tansu
        0.6 keeps a leader that leaves a forming group as the group's leader, answers every
        other member's SyncGroup with REBALANCE_IN_PROGRESS and never forms the group again
        (until the broker restarts), so no dispatcher would take a send any more."""
        self._pause()
        began = time.monotonic()
        while (now := time.monotonic()) - began < limit:
            with self._lock:
                if self.rebalances.settled(now, polled_since=began):
                    return True
            self.consumer.consume(BATCH, 0.1)  # rebalance callbacks; paused: nothing comes
        log.warning("leaving the group during a rebalance (it did not end within %.0f s)", limit)
        return False

    def _commit(self) -> None:
        """Commit every owned partition up to its first send without a recorded outcome."""
        with self._lock:
            points = {p: o for p, o in self.tracker.committable().items()
                      if p in self.owned and p not in self.loading}
        if points and self.lease.valid(time.monotonic()):
            topic = self.topic(SENDS)
            try:
                self.consumer.commit(offsets=[TopicPartition(topic, p, o)
                                              for p, o in points.items()], asynchronous=False)
            except Exception as exc:  # no assignment any more, or the group moved on
                log.info("commit skipped: %s", exc)

    def _assigned(self, _: Any, partitions: list[TopicPartition]) -> None:
        """New partitions: paused until their done and interrupted sends are known (read in
        the background, never here)."""
        mine = sorted(tp.partition for tp in partitions)
        self.consumer.assign(partitions)
        if partitions:
            self.consumer.pause(partitions)
        with self._lock:
            self._epoch += 1
            self.member = self.consumer.memberid()
            self.rebalances.ended(time.monotonic())
            if self.stopping:  # assigned only to be left in a formed group
                log.info("partitions [%s] assigned while stopping: not taken",
                         ", ".join(str(p) for p in mine))
                return
            for p in mine:
                self.owned[p] = self._epoch
                self.revoking.discard(p)
            if mine:  # one rebuild for the partitions of this assignment
                fut = self.rebuilder.submit(self._rebuild, mine, self._epoch)
                self.loading.update(dict.fromkeys(mine, fut))
        log.info("partitions [%s] assigned: rebuilding their state",
                 ", ".join(str(p) for p in mine))

    def _loaded(self) -> None:
        """Resume the partitions whose rebuild finished (run on the loop)."""
        with self._lock:
            finished: dict[Future[Any], list[int]] = {}
            for p, fut in self.loading.items():
                if fut.done():
                    finished.setdefault(fut, []).append(p)
            for fut, parts in finished.items():
                exc = None if fut.cancelled() else fut.exception()
                if exc is not None:
                    log.warning("rebuilding partitions %s failed (%s): again", parts, exc)
                    again = self.rebuilder.submit(self._rebuild, parts, self.owned[parts[0]])
                    self.loading.update(dict.fromkeys(parts, again))
                    continue
                for p in parts:
                    del self.loading[p]
                self.consumer.resume([TopicPartition(self.topic(SENDS), p) for p in parts])
            resumed = finished and not self.loading
        if resumed:
            log.info("partitions [%s]: sends done, resumed",
                     ", ".join(str(p) for p in sorted(self.owned)))

    def _rebuild(self, partitions: list[int], epoch: int) -> None:
        """Read the window of intents and outcomes of these partitions; record the interrupted
        sends (or let them be re-sent under their key); runs on the rebuild thread."""
        now = time.time()
        since = round((now - self.config.dispatch_dedupe_window) * 1000)
        logs = [TopicPartition(self.topic(t), p, self._window_start(t, p, since))
                for t in (OUTCOMES, INTENTS) for p in partitions]
        intents: list[tuple[int, dict[str, Any]]] = []
        outcomes: dict[str, float] = {}

        def read(msg: Message) -> None:
            topic = (msg.topic() or "")[len(self.settings.tuning.topic_prefix):]
            try:
                record = self.codec.decode(msg.value(), topic=topic)
            except SchemaError:
                return
            if record["at"] < since:
                return
            if topic == OUTCOMES:
                outcomes[record["send_id"]] = record["at"] / 1000
            else:
                intents.append((msg.partition() or 0, record))

        read_to_end(self.reader, logs, read, timeout=120)
        self.reader.unassign()
        orphans = interrupted(intents, outcomes)
        if orphans and not self._leased(partitions, epoch, timeout=120):
            return  # lost meanwhile: no longer this rebuild's to settle
        unknown: list[str] = []
        again: dict[str, tuple[int, float, int]] = {}
        for orphan in orphans:
            p, intent = orphan.partition, orphan.intent
            if reconcile(intent["provider"], intent["at"] / 1000, now) == "resend":
                again[intent["send_id"]] = (p, intent["at"] / 1000, orphan.calls)
                continue
            with self._lock:
                if self.owned.get(p) != epoch or p not in self.loading:
                    continue  # no longer this rebuild's to settle
            if not self.lease.valid(time.monotonic()):  # the partition stays paused: again
                raise RuntimeError("the lease lapsed while interrupted sends were recorded")
            unknown.append(intent["send_id"])
            result = outcome(dict(intent), intent["provider"], "FAILED", orphan.calls, 0.0,
                             error_code=INTERRUPTED)
            self.flow.sent(self.topic(OUTCOMES))
            self.producer.produce(self.topic(OUTCOMES), partition=p,
                                  key=intent["account_id"].encode(),
                                  value=self.codec.encode("ProviderOutcome", result))
            DISPATCHED.labels(intent["provider"], "FAILED").inc()
        if unknown and self.producer.flush(30):
            raise RuntimeError("outcomes of interrupted sends not acknowledged")
        with self._lock:
            for sid, at in outcomes.items():
                self.done.add(sid, at)
            for sid in unknown:
                self.done.add(sid, now)
            self.resending.update(again)
        log.info("partitions %s: %d sends done in the window, %d interrupted recorded "
                 "(outcome unknown), %d interrupted to re-send under their idempotency key",
                 partitions, len(outcomes), len(unknown), len(again))

    def _leased(self, partitions: list[int], epoch: int, timeout: float) -> bool:
        """Wait until the lease is valid (after a stall, until the group confirms it); False when
        none of these partitions is this rebuild's any more (lost, or being revoked: their next
        owner settles them). An interrupted send is settled only under a valid lease, and its
        partition resumes only once it is settled, or it would be dispatched again
        (RuntimeError after `timeout`: the rebuild is retried)."""
        deadline = time.monotonic() + timeout
        while not self.lease.valid(time.monotonic()):
            with self._lock:
                if not any(self.owned.get(p) == epoch and p in self.loading
                           and p not in self.revoking for p in partitions):
                    return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"no valid lease within {timeout:.0f} s")
            time.sleep(0.1)
        return True

    def _window_start(self, name: str, partition: int, since: int) -> int:
        """The first offset of a partition of intents or outcomes written at `since` or later
        (searched: this broker's offsets_for_times ignores the timestamp)."""
        tp = TopicPartition(self.topic(name), partition)
        low, high = self.reader.get_watermark_offsets(tp, timeout=10)
        if high - low <= SEARCH_ABOVE:
            return low

        def timestamp_at(offset: int) -> int | None:
            self.reader.assign([TopicPartition(tp.topic, partition, offset)])
            for msg in self.reader.consume(1, 5.0):
                if msg.error() is None:
                    return msg.timestamp()[1]
            return None

        return first_at_or_after(timestamp_at, low, high, since)

    def _revoked(self, _: Any, partitions: list[TopicPartition]) -> None:
        """Partitions leaving: their sends may finish a call already made for a short grace,
        then are cancelled; outcomes are flushed and offsets committed before they go."""
        gone = {tp.partition for tp in partitions}
        with self._lock:
            self.rebalances.began(time.monotonic())
            self.revoking |= gone
            rebuilding = {self.loading[p] for p in gone if p in self.loading}
        for fut in rebuilding:  # what it records is flushed before the partition moves on
            if not fut.cancel():
                try:
                    fut.result(timeout=130)
                except Exception as exc:  # noqa: BLE001 (the next owner rebuilds anyway)
                    log.info("rebuild of revoked partitions ended: %s", exc)
        deadline = time.monotonic() + REVOKE_GRACE
        while any(self.tasks.get(p) for p in gone) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._cancel(gone)
        self.producer.flush(REVOKE_GRACE)
        self._commit()
        self._forget(gone)

    def _lost(self, _: Any, partitions: list[TopicPartition]) -> None:
        """Partitions taken away (session expired): stop acting for them at once."""
        gone = {tp.partition for tp in partitions}
        log.warning("partitions %s lost: their sends are cancelled", sorted(gone))
        with self._lock:
            self.rebalances.began(time.monotonic())
        self._forget(gone)
        self._cancel(gone)

    def _cancel(self, gone: set[int]) -> None:
        """Cancel the tasks of these partitions (on the loop)."""
        assert self.loop is not None
        for p in gone:
            for task in list(self.tasks.get(p, ())):
                self.loop.call_soon_threadsafe(task.cancel)

    def _forget(self, gone: set[int]) -> None:
        """Drop every trace of these partitions' work."""
        with self._lock:
            for p in gone:
                self.owned.pop(p, None)
                self.revoking.discard(p)
                fut = self.loading.pop(p, None)
                if fut is not None:
                    fut.cancel()
            self.tracker.forget(gone)
            for sid in [s for s, recs in self.in_flight.items() if recs[0][0] in gone]:
                del self.in_flight[sid]
            for sid in [s for s, (p, *_) in self.resending.items() if p in gone]:
                del self.resending[sid]
