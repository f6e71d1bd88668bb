"""The account router in Faust: one agent owning each account partition, its timer and campaigns.

Plumbing only: decode, bring each record to the partition that owns its account, call the
handler registered for its (topic, record) in `streams.domain.handlers`, and hand the effects
on (outputs to the outbox, deadlines to the timer). The policy lives in the pure handlers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust
from faust.types import TP, EventT

from schemas import CATALOG, Codec, SchemaError, enforce_caps, key_partition
from streams.app import create_app, store_options
from streams.campaigns import Campaigns
from streams.domain import handlers as h
from streams.domain import records
from streams.domain.channels import ChannelPolicy
from streams.domain.deadlines import Due, InputProgress, horizon
from streams.domain.priors import PriorBook
from streams.domain.probing import ProbeBudget, ProbeConfig
from streams.domain.records import Output
from streams.domain.state import (
    MESSAGES,
    ROUTER_TABLES,
    WAITS,
    parse_key,
)
from streams.follow import Follower
from streams.kafka import consumer
from streams.metrics import Counts, Flow
from streams.outbox import Outbox
from streams.privacy import masked
from streams.settings import Settings
from streams.state import StateTables, event_time, handle_events
from streams.timers import DeadlineTimer

log = logging.getLogger(__name__)

FORWARDED, DECISIONS = "pushcascade.account-events", "campaign.decisions"
PRIORS = "route.priors"
#: Inputs the router consumes: outside topics, then the internal one that brings records home
#: (records on a partition not their account's, device registrations, campaign decisions).
INPUTS = ("push.requests", "push.acks", "account.settings", "account.profiles",
          "device.registry", FORWARDED)
#: Seconds between two measurements of the worker's consumer lag.
LAG_INTERVAL = 5.0
#: Campaign deliveries settled between two yields to the event loop after a decision.
SETTLE_CHUNK = 500


def router_config(settings: Settings) -> h.RouterConfig:
    """The handlers' configuration from the settings."""
    t = settings.tuning
    policy = ChannelPolicy(
        new_account_pushes=t.new_account_pushes, k1=t.score_k1, k2=t.score_k2, order=t.channels,
        read_deadlines={i: t.read_deadline(i) for i in ("LOW", "NORMAL", "HIGH", "URGENT")},
        strategy=t.strategy, decay=t.score_decay, costs=t.costs, read_value=t.read_values,
        send_price=t.send_price, read_window=t.read_window)
    probe = ProbeConfig(
        probe_count_first=t.probe_count_first, probe_count_again=t.probe_count_again,
        min_route_success=t.min_route_success, reprobe_interval_s=t.probe_interval,
        per_device_probes_per_hour=t.probe_device_per_hour,
        global_probes_per_second=t.probe_global_per_second, probe_timeout_s=t.probe_timeout,
        bandit=t.strategy == "adaptive", half_life_s=t.route_half_life,
        prior_strength=t.route_prior_strength)
    return h.RouterConfig(policy, probe, receipt_deadline=t.receipt_deadline,
                          reach_grace=t.reach_grace, retention=t.message_retention)


def check_handlers(inputs: Iterable[str]) -> dict[str, str]:
    """Every input topic's catalog record (and a campaign decision) has a handler, and every
    handler an input. Returns topic -> expected record name; raises at start otherwise."""
    topics = {*inputs, DECISIONS} - {FORWARDED}
    expected = {s.name: s.record for s in CATALOG if s.name in topics}
    if set(expected.items()) != set(h.HANDLERS):
        raise RuntimeError(f"router inputs {sorted(expected.items())} and handlers "
                           f"{sorted(h.HANDLERS)} differ")
    return expected


class Router:
    """Consumes every account-keyed input, keeps account, message and device state, escalates."""

    def __init__(self, settings: Settings, bootstrap: str, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or Codec(settings.connections.schema_registry_url or None)
        self.config = router_config(settings)
        self.expected = check_handlers(INPUTS)
        self.partitions = settings.tuning.partitions
        self.prefix = settings.tuning.topic_prefix
        self.app = app = create_app(settings, bootstrap)
        self.flow = Flow("worker")
        t = settings.tuning
        self.outbox = Outbox(bootstrap, flow=self.flow, transactional_id=(
            t.worker_transactional_id() if t.transactional else None))
        # the read-back must see this worker's own records before their transaction commits
        self.state = StateTables(app, ROUTER_TABLES, self.partitions, self.outbox,
                                 t.broker_profile == "tansu",
                                 store_options(settings), reader=lambda: consumer(
                                     bootstrap, f"{app.conf.id}-journal-reader",
                                     **{"fetch.wait.max.ms": 5,
                                        "isolation.level": "read_uncommitted"}),
                                 chunk_bytes=settings.tuning.journal_chunk_bytes)
        self.state.attach()
        self.budget = ProbeBudget.from_config(self.config.probe)
        self.priors = PriorBook()
        self.prior_follower = Follower(bootstrap, settings.topic("route-priors"),
                                       [settings.topic(PRIORS)], self._prior, "route-priors")
        app.task(self._follow_priors)
        app.timer(LAG_INTERVAL)(self._measure_lag)
        self.counts = Counts("router")
        #: campaign id -> message keys with deliveries waiting for its decision (a cache of
        #: the messages table, rebuilt with the deadline index)
        self.waits: dict[str, set[bytes]] = {}
        self.tallies: set[tuple[str, int]] = set()
        self.state.before_flush.append(self._send_tallies)
        self.timer = DeadlineTimer(app, settings.topic(FORWARDED), self.state, MESSAGES,
                                   h.MESSAGE_DEADLINES, lambda value: h.pending_work(value)[0],
                                   self.fire, settings.tuning.deadline_tick, self.horizon,
                                   self._assigned)
        self.state.derive(MESSAGES, h.waits_index)
        #: the inputs a deadline waits for: every one that can cancel or settle it (an ack, a
        #: profile or device that makes an account reachable, a setting, a decision)
        self.input_topics = tuple(settings.topic(n) for n in INPUTS)
        #: a caught-up input's latest fetch saw what the broker had when it was sent; a record
        #: stamped this long before may still be on its way to the broker
        self.input_delay = settings.tuning.input_slack
        self.campaigns = Campaigns(app, settings, self.codec, self.emit, self.state,
                                   self.dead_letter)
        source = app.topic(*[settings.topic(n) for n in INPUTS], key_type=bytes,
                           value_type=bytes, partitions=self.partitions)
        app.agent(source, name="accounts")(self.run)

    def context(self, partition: int, now: float) -> h.Context:
        """What a handler needs besides state: configuration, now (the time of its cause: the
        input record's timestamp, a deadline's due time), partition, budget, priors."""
        return h.Context(self.config, now, partition, self.budget, self.priors)

    async def _follow_priors(self) -> None:
        self.prior_follower.start()

    def _prior(self, msg: Any) -> None:
        """One record of route.priors: remember it, or forget its key on a tombstone."""
        if msg.value() is None:
            parts = (msg.key() or b"").decode().rsplit("/", 2)
            if len(parts) == 3:
                self.priors.remove(parts[0], None if parts[1] == "*" else parts[1], parts[2])
            return
        try:
            p = self.codec.decode(msg.value(), topic=PRIORS, expected="RoutePrior")
        except SchemaError as exc:
            log.warning("route prior skipped: %s", exc)
            return
        self.priors.put(p["manufacturer"], p["model"], p["route"], p["success_rate"],
                        p["samples"])
        self.counts.add("route_prior")

    # -- the agent ---------------------------------------------------------------------------

    async def run(self, stream: faust.StreamT) -> None:
        """Handle every input event in partition order, each all or nothing."""
        await handle_events(stream, self.state, self.flow, self.handle, self.dead_letter,
                            self.counts)

    async def _measure_lag(self) -> None:
        """The group's lag per assigned partition: the last fetch's high watermark against the
        committed offset."""
        consumer = self.app.consumer
        try:
            behind = {}
            for tp in consumer.assignment():
                committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
                high = consumer.highwater(tp)
                if high is not None:
                    behind[(tp.topic, tp.partition)] = high - (committed or 0)
            self.flow.lags(behind)
        except Exception as exc:  # a metric must never stop the worker
            log.debug("lag not measured: %s", exc)

    async def handle(self, event: EventT) -> None:
        """Decode, bring the record to its owner partition, then apply it to state."""
        msg = event.message
        name = msg.topic[len(self.prefix):]
        source = name
        if name == FORWARDED:
            source = dict(msg.headers or []).get("source", b"").decode()
        try:
            record_name, record = self.codec.decode_named(msg.value, topic=source)
            if record_name != self.expected.get(source):
                raise SchemaError(source, f"expected {self.expected.get(source)}, "
                                          f"got {record_name}")
            enforce_caps(source, record_name, record, event_time(msg))
        except SchemaError as exc:
            self.dead_letter(event, str(exc))
            return
        if record_name == "CampaignDecision":
            await self.decided(record, msg.partition)
            return
        account_id = record.get("account_id")
        if not account_id:
            self.dead_letter(event, f"{source}: record without account_id")
            return
        owner = key_partition(account_id, self.partitions)
        if name != FORWARDED and (
                name == "device.registry" or owner != msg.partition):
            self.state.at(msg.partition).emit((
                self.settings.topic(FORWARDED), account_id.encode(),
                masked(self.codec, msg.value, source), owner, [("source", name.encode())]))
            self.counts.add("forwarded")
            return
        handler = h.HANDLERS[(source, record_name)]
        ctx = self.context(msg.partition, event_time(msg))
        try:
            effects = handler(self.state.at(msg.partition), record, ctx)
        except h.Rejected as exc:
            self.dead_letter(event, str(exc))
            return
        self.apply(effects, msg.partition)

    def apply(self, fx: h.Effects, partition: int) -> None:
        """Send a handler's outputs, remember its deadlines and what waits for campaigns."""
        for out in fx.outputs:
            self.emit(out, partition)
        for campaign_id, key in fx.waits:
            self.waits.setdefault(campaign_id, set()).add(key)
        for campaign_id in fx.tallies:
            self.tallies.add((campaign_id, partition))
        for name, n in fx.counts.items():
            self.counts.add(name, n)

    async def decided(self, rec: dict[str, Any], partition: int) -> None:
        """A campaign decision reached this partition: settle its waiting deliveries."""
        tables = self.state.at(partition)
        ctx = self.context(partition, rec["decided_at"] / 1000)
        self.apply(h.on_campaign_decision(tables, rec, ctx), partition)
        campaign_id = rec["campaign_id"]
        keys = [k for k in self.waits.get(campaign_id, ())
                if key_partition(parse_key(k)[0], self.partitions) == partition]
        for i, key in enumerate(keys, 1):
            self.apply(h.settle_campaign(tables, key, campaign_id, ctx), partition)
            self.waits[campaign_id].discard(key)
            if i % SETTLE_CHUNK == 0:  # settled so far join the batch; others may run
                self.state.done()
                await asyncio.sleep(0)
                self.state.begin(partition)
        if not self.waits.get(campaign_id):
            self.waits.pop(campaign_id, None)

    # -- the timer ---------------------------------------------------------------------------

    async def _assigned(self, partitions: set[int]) -> None:
        """Partitions taken over: remember their deliveries waiting on a campaign (from the
        waits table), settling those whose decision came before this worker took them."""
        for partition in sorted(partitions):
            ctx = self.context(partition, self.state.clock.get(partition, 0.0))
            for i, (_, wait) in enumerate(self.state.scan(WAITS, partition), 1):
                campaign_id, key = wait["campaign_id"], wait["key"].encode()
                self.state.begin(partition)
                fx = h.settle_campaign(self.state.at(partition), key, campaign_id, ctx)
                if fx.counts["campaign_settled"]:
                    self.apply(fx, partition)
                    self.state.done()
                else:
                    self.state.discard()
                    self.waits.setdefault(campaign_id, set()).add(key)
                if i % SETTLE_CHUNK == 0:
                    await asyncio.sleep(0)

    def horizon(self, partition: int, now: float) -> float:
        """How far the partition's deadlines may fire (streams.domain.deadlines.horizon), so
        that no deadline fires before a READ, a profile or a device that came before it."""
        consumer = self.app.consumer
        handled = self.state.handled.get(partition, {})
        progress = []
        for topic in self.input_topics:
            tp = TP(topic, partition)
            high = consumer.highwater(tp)
            progress.append(InputProgress(
                high is None or handled.get(topic, 0) < high,
                self.state.times.get((topic, partition), 0.0),
                consumer.fetched_at(tp)))  # type: ignore[attr-defined]
        return horizon(now, progress, self.input_delay)

    def fire(self, due: Due) -> None:
        """Apply a due deadline of a partition this worker owns (in the timer's event); the
        handler checks the state."""
        ctx = self.context(due.partition, due.due_at)
        self.apply(h.on_deadline(self.state.at(due.partition), due, ctx), due.partition)

    def _send_tallies(self) -> None:
        """Before each flush: the campaign tallies changed in this batch, as absolute counts."""
        tallies, self.tallies = self.tallies, set()
        for campaign_id, partition in tallies:
            now = self.state.clock.get(partition, 0.0)
            out = h.tally_output(self.state.at(partition), campaign_id, partition, now)
            if out is not None:
                self.emit(out, partition)

    # -- output ------------------------------------------------------------------------------

    def emit(self, out: Output, partition: int) -> None:
        """Encode a record into its partition's batch (sent once the batch is durable)."""
        self.state.at(partition).emit((
            self.settings.topic(out.topic), out.key.encode(),
            self.codec.encode(out.record, out.value), out.partition,
            [("source", out.source.encode())] if out.source else None))

    def dead_letter(self, event: EventT, error: str) -> None:
        """Send the record and the reason to push.dlq (addresses masked); the partition goes on."""
        msg = event.message
        self.counts.add("dead_letter")
        name = msg.topic[len(self.prefix):]
        if name == FORWARDED:
            name = dict(msg.headers or []).get("source", b"").decode()
        self.state.at(msg.partition).emit((
            self.settings.topic("push.dlq"), msg.key or b"",
            self.codec.encode("DeadLetter", records.dead_letter(
                msg.key, masked(self.codec, msg.value, name), msg.topic, msg.partition,
                msg.offset, error, event_time(msg))), None, None))

