"""A rehearsal of the demo: the router's own handlers played against a population in one
process, on a simulated clock, in seconds (no broker, no services).

Push requests go in at the demo's rate; each request, ack and deadline is applied in time
order through the pure handlers (streams.domain.handlers) on in-memory tables, as a worker
would apply it. Every send the router decides is answered by the provider simulator's model
of the population (`Population.react`: the same draws the demo's simulator makes for the same
send), its receipt and READ coming back as acks after their delays. The fleet's route priors
are recomputed from the sends every `priors_interval`, as the sink's job does in the demo. The
records land in ClickHouse tables of the sink's schema, so the demo's figures, report and
`pushcascade sql` read a rehearsal as they read a run.

A campaign's owner (streams.domain.campaigns) takes each tally the router reports and decides
at the campaign's deadline, as the campaign agent does; the decision settles the deliveries
that wait for it. What it leaves out, and the demo measures: the stack's latencies (constants
here: SEND_DELAY, DEADLINE_DELAY), provider errors and retries, and faults of processes and
broker.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from connectors.clickhouse.priors import bucket_seconds
from connectors.simulator.behaviour import Population
from streams.domain import handlers as h
from streams.domain import records
from streams.domain.campaigns import Campaign, decide, record_tally
from streams.domain.deadlines import Due
from streams.domain.priors import FleetRate, PriorBook, compute
from streams.domain.probing import ProbeBudget
from streams.domain.records import Output, ms
from streams.domain.state import MemoryTables
from streams.harness.crowd import Crowd

#: Seconds from the router's decision to the provider's, for a send the router makes.
SEND_DELAY = 0.08
#: Seconds a deadline fires after its due time (the demo's stream time and its dispatch).
DEADLINE_DELAY = 0.35
#: A run starts at a multiple of this (s: 60 days, within the tables' 400-day TTL, and a
#: multiple of any priors' bucket width that divides it: 1-6, 8-10, 12, 15, 20, 30, 60 s...).
ANCHOR = 60 * 86400
#: Records of these topics land in ClickHouse (what the demo's figures and report read).
STORED = ("push.requests", "push.sends", "push.acks", "push.results", "push.escalations",
          "device.route-changes", "account.lifecycle", "device.registry", "campaign.decisions")


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    value: Any = field(compare=False)


@dataclass
class Rehearsal:
    """One strategy's run of a population on a simulated clock: the records it produced."""

    crowd: Crowd
    config: h.RouterConfig
    rate: float
    duration: float
    priors_interval: float = 5.0  # the sink's job's (the demo's: streams.harness.loop)
    priors_min_samples: int = 20
    priors_half_life: float = 10.0
    campaign_fallback_ratio: float = 0.5
    start: float = field(default_factory=lambda: anchored(time.time()))
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def run(self) -> Rehearsal:
        """Play every request of the run and everything that follows it to the end."""
        self.crowd.duration = self.duration
        self.population = Population.from_dict(self.crowd.document(self.start, self.duration))
        self.tables = MemoryTables()
        self.budget = ProbeBudget.from_config(self.config.probe)
        self.priors = PriorBook()  # the newest refresh's (each handler gets the latest)
        self.phones = {p.device_id: p for m in self.crowd.members for p in m.phones}
        self.fleet: Counter[tuple[str, str, str, float]] = Counter()
        self.received: Counter[tuple[str, str, str, float]] = Counter()
        self.campaigns: dict[str, Campaign] = {}
        self.waits: dict[str, list[bytes]] = {}
        self.events: list[_Event] = []
        self.seq = itertools.count()
        for topic, record in self.crowd.registrations(ms(self.start)):
            handler = h.on_profile if topic == "account.profiles" else h.on_device
            if topic in STORED:
                self.records.append((topic, record))
            self._apply(handler(self.tables, record, self._ctx(self.start)), self.start)
        total = int(self.duration * self.rate)
        for n in range(total):
            at = self.start + 1.0 + n / self.rate
            self._at(at, "request", self.crowd.request(n, ms(at), total))
        end = self.start + self.duration + 1.0
        refresh = self.start + self.priors_interval
        while self.events:
            event = heapq.heappop(self.events)
            while refresh <= min(event.at, end + 60):
                self._refresh_priors(refresh)
                refresh += self.priors_interval
            self._handle(event)
        return self

    # -- plumbing ----------------------------------------------------------------------------

    def _ctx(self, now: float) -> h.Context:
        return h.Context(self.config, now, 0, self.budget, self.priors)

    def _at(self, at: float, kind: str, value: Any) -> None:
        heapq.heappush(self.events, _Event(at, next(self.seq), kind, value))

    def _handle(self, event: _Event) -> None:
        if event.kind == "request":
            self.records.append(("push.requests", event.value))
            self._apply(h.on_request(self.tables, event.value, self._ctx(event.at)), event.at)
        elif event.kind == "campaign":
            self._decide(*event.value)
        elif event.kind == "deadline":
            due: Due = event.value
            self._apply(h.on_deadline(self.tables, due, self._ctx(due.due_at)), due.due_at,
                        DEADLINE_DELAY)
        else:
            self.records.append(("push.acks", event.value))
            try:
                fx = h.on_ack(self.tables, event.value, self._ctx(event.at))
            except h.Rejected:
                self.counts["rejected_ack"] += 1
                return
            self._apply(fx, event.at)

    def _apply(self, fx: h.Effects, now: float, delay: float = SEND_DELAY) -> None:
        """Keep an effect's deadlines and records; answer its sends as the population would."""
        self.counts.update(fx.counts)
        for due in fx.dues:
            self._at(due.due_at + (0.0 if due.kind == "EXPIRE" else DEADLINE_DELAY),
                     "deadline", due)
        for out in fx.outputs:
            if out.topic in STORED:
                self.records.append((out.topic, out.value))
            if out.topic == "push.sends":
                self._answer(out, now + delay)
        for campaign_id, key in fx.waits:
            self.waits.setdefault(campaign_id, []).append(key)
        for campaign_id in fx.tallies:
            tally = h.tally_output(self.tables, campaign_id, 0, now)
            assert tally is not None
            campaign = self.campaigns.setdefault(campaign_id, Campaign(campaign_id, 0))
            value = tally.value
            if record_tally(campaign, 0, value["targeted"], value["acked"],
                            value["due_at"] / 1000):
                assert campaign.due_at is not None
                self._at(campaign.due_at + DEADLINE_DELAY, "campaign",
                         (campaign_id, campaign.due_at))

    def _decide(self, campaign_id: str, due_at: float) -> None:
        """A campaign's decision deadline: decide (unless a later tally moved it) and settle
        the deliveries waiting for it."""
        campaign = self.campaigns[campaign_id]
        if campaign.decided or campaign.due_at != due_at:
            return
        d = decide(campaign, self.campaign_fallback_ratio)
        decision = records.campaign_decision(campaign_id, d.targeted, d.acked, d.ratio,
                                             d.threshold, d.fallback, due_at)
        self.records.append((decision.topic, decision.value))
        ctx = self._ctx(due_at)
        self._apply(h.on_campaign_decision(self.tables, decision.value, ctx), due_at)
        for key in self.waits.pop(campaign_id, []):
            self._apply(h.settle_campaign(self.tables, key, campaign_id, ctx), due_at)

    def _answer(self, out: Output, arrives: float) -> None:
        """The population's receipt and READ for one send (none for the account-level record
        of an app push: the devices' sends are the deliveries)."""
        send = out.value
        channel, device_id, route = send["channel"], send["device_id"], send["route"]
        if channel == "APP" and device_id is None:
            return
        target = route if channel == "APP" else channel
        reaction = self.population.react(self.crowd.spec.seed, send["send_id"], target,
                                         channel, send["account_id"], device_id, "", arrives)
        ack = {"message_id": send["message_id"], "account_id": send["account_id"],
               "channel": channel, "device_id": device_id, "route": route,
               "send_id": send["send_id"]}
        if channel == "APP":
            phone = self.phones[device_id]
            width = bucket_seconds(self.priors_half_life)
            key = (phone.manufacturer, phone.model, route, (arrives // width + 0.5) * width)
            self.fleet[key] += 1
            if reaction.receipt_after is not None:
                self.received[key] += 1
                at = arrives + reaction.receipt_after
                self._at(at, "ack", {**ack, "kind": "RECEIPT", "acked_at": ms(at)})
        if reaction.read_after is not None:
            at = arrives + reaction.read_after
            self._at(at, "ack", {**ack, "kind": "READ", "acked_at": ms(at)})

    def _refresh_priors(self, now: float) -> None:
        """The fleet's route priors from the sends before the newest receipt deadline (the
        sink's job: streams.domain.priors.compute over the manufacturer_routes view)."""
        before = now - self.config.receipt_deadline
        rates = [FleetRate(*key[:3], sends, self.received[key], key[3])
                 for key, sends in self.fleet.items() if key[3] < before]
        book = PriorBook()
        for p in compute(rates, self.priors_min_samples, now, self.priors_half_life):
            book.put(p.manufacturer, p.model, p.route, p.success_rate, p.samples)
        self.priors = book


def anchored(now: float) -> float:
    """A run's start: the latest multiple of ANCHOR before `now`. Within the tables' TTL, and
    a whole number of the priors' time buckets (which the sink aligns to the epoch) from every
    other run's start: a run plays the same whenever it starts (it used to start at the
    second, and the buckets' phase changed the routes of a run of the same seed)."""
    return float(int(now) // ANCHOR * ANCHOR)


def store(records: list[tuple[str, dict[str, Any]]], dsn: str) -> None:
    """Write a rehearsal's records into the sink's tables of a fresh store (each through the
    Avro schema of its topic, as the sink would read it; offsets in order per topic)."""
    from connectors.clickhouse.client import client
    from connectors.clickhouse.migrate import Migrator
    from connectors.clickhouse.tables import TABLES, Row, row
    from schemas import Codec
    from streams.harness.bench.sink import bare_insert

    migrator = Migrator(dsn)
    migrator.up()
    codec = Codec()
    rows: dict[str, list[Row]] = {}
    for topic, value in records:
        table = TABLES[topic]
        decoded = codec.decode(codec.encode(table.record, value), topic, table.record)
        at = rows.setdefault(topic, [])
        at.append(row(table, decoded, topic, 0, len(at)))
    bare_insert(client(dsn, migrator.db), rows, 50_000)
