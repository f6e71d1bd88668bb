"""The router's handlers, pure: (state, input record, context) -> state changes and outputs.

Each `on_*` function applies one decoded input record to the state of the account partition
it belongs to (through `Tables`) and returns `Effects`: the output records, the deadlines to
remember, the campaign tallies that changed and the counters. No Kafka, Faust or clock here:
`Context.now` is the time. A record that cannot be applied raises `Rejected` (a dead letter).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from streams.domain import kinds, records
from streams.domain.channels import (
    NEW,
    Account,
    ChannelPolicy,
    Message,
    climbs,
    escalation_target,
    is_due,
    next_send,
    note_send,
    plan_push,
    rank,
    record_read,
    send_id,
    settle,
)
from streams.domain.deadlines import Due
from streams.domain.escalation import ALWAYS, EXPLORE_AFTER
from streams.domain.priors import PriorBook
from streams.domain.probing import (
    ProbeBudget,
    ProbeConfig,
    choose_fallback,
    evaluate_target,
    plan_probes,
)
from streams.domain.records import Output
from streams.domain.routes import (
    DeviceRoutes,
    ReceiptOutcome,
    effective_rate,
    fallback_routes,
    record_receipt,
    record_send,
    register_device,
    route_prior,
)
from streams.domain.state import (
    ACCOUNTS,
    DEVICES,
    KINDS,
    MESSAGES,
    TALLIES,
    WAITS,
    Tables,
    account_key,
    device_key,
    kinds_key,
    message_key,
    tally_key,
    wait_key,
)

PROFILE_CHANNELS = (("WECHAT", "wechat_openid"), ("SMS", "phone"), ("EMAIL", "email"))


class Rejected(ValueError):
    """The record cannot be applied to state; it goes to the dead-letter topic with this reason."""


@dataclass(frozen=True)
class RouterConfig:
    """Everything the handlers are configured with (built from Settings by the plumbing)."""

    policy: ChannelPolicy = field(default_factory=ChannelPolicy)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    receipt_deadline: float = 30.0
    reach_grace: float = 30.0
    retention: float = 86400.0

    def lifetime(self, importance: str) -> float:
        """Seconds after its request a message's last deadline can pass (expiry then follows)."""
        return (self.reach_grace + self.policy.read_deadlines[importance]
                + self.receipt_deadline)


@dataclass
class Context:
    """What a handler knows besides state and input: configuration, time, its partition."""

    config: RouterConfig
    now: float
    partition: int
    budget: ProbeBudget
    priors: PriorBook = field(default_factory=PriorBook)

    def ranking(self, device: DeviceRoutes) -> ProbeConfig:
        """The probe settings with the fleet's priors for this device's unmeasured routes."""
        lookup = self.priors.shrunk if self.config.probe.bandit else self.priors.for_device
        fleet = lookup(device.manufacturer, device.model, device.alternatives)
        if not fleet:
            return self.config.probe
        base = self.config.probe.prior
        prior = {r: fleet.get(r, route_prior(r, base)) for r in device.alternatives}
        return replace(self.config.probe, prior=prior, fleet=frozenset(fleet))


@dataclass
class Effects:
    """What applying a record produced, besides the state it wrote."""

    outputs: list[Output] = field(default_factory=list)
    dues: list[Due] = field(default_factory=list)
    tallies: set[str] = field(default_factory=set)
    waits: list[tuple[str, bytes]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


Handler = Callable[[Tables, dict[str, Any], Context], Effects]


# -- push requests -----------------------------------------------------------------------------


def on_request(tables: Tables, req: dict[str, Any], ctx: Context) -> Effects:
    """A push request: fan out to a new account, or send on the primary with a read deadline.

    A repeat of a message the account already has changes nothing. A request for an account
    with no enabled channel yet waits `reach_grace` for a profile or device before it is final."""
    fx = Effects()
    account_id, message_id = req["account_id"], req["message_id"]
    key = message_key(account_id, message_id)
    if tables.get(MESSAGES, key) is not None:
        fx.counts["duplicate_request"] += 1
        return fx
    account = _account(tables, account_id, ctx)
    message = Message(message_id, account_id, req["importance"], ctx.partition,
                      device_ids=list(req["device_ids"]), campaign_id=req["campaign_id"],
                      created_at=ctx.now, content=records.content(req))
    message.expires_at = round(ctx.now + ctx.config.lifetime(message.importance)
                               + ctx.config.retention, 3)
    fx.dues.append(_due(message, "EXPIRE", message.expires_at))
    _plan(tables, ctx, fx, account, message)
    if ctx.config.probe.bandit and "APP" not in message.sent:
        _retarget_idle(tables, ctx, fx, account)
    tables.put(MESSAGES, key, message.to_dict())
    return fx


def _retarget_idle(tables: Tables, ctx: Context, fx: Effects, account: Account) -> None:
    """adaptive: a push that sends no APP re-evaluates the targets of the account's devices
    all the same, so a phone the account no longer pushes to follows the fleet's priors (after
    an outage, back to the route that recovered) rather than keep what its last event left."""
    for device_id in account.devices:
        dkey = device_key(account.account_id, device_id)
        raw = tables.get(DEVICES, dkey)
        if raw is None:
            continue
        device = DeviceRoutes.from_dict(raw)
        if _retarget(ctx, fx, device, ctx.ranking(device)):
            tables.put(DEVICES, dkey, device.to_dict())


def _plan(tables: Tables, ctx: Context, fx: Effects, account: Account, message: Message) -> None:
    """Decide and emit a message's first sends (or park it while the account is unreachable)."""
    now, grace = ctx.now, ctx.config.reach_grace
    if ctx.config.policy.strategy == "adaptive":  # its sends and reads teach this kind
        message.kind = kinds.kind_of(account, ctx.config.policy)
    plan = plan_push(account, message.importance, now, ctx.config.policy)
    if plan.unreachable:
        if message.waiting_until is None:
            message.waiting_until = round(now + grace, 3)
            account.waiting.append(message.message_id)
            tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
            fx.dues.append(_due(message, "GRACE", message.waiting_until))
            fx.counts["waiting"] += 1
        return
    changed = account.lifecycle == NEW or plan.established
    if message.waiting_until is not None:
        account.waiting.remove(message.message_id)
        message.waiting_until, changed = None, True
    message.sent = [s.channel for s in plan.sends]
    message.deadline_at = plan.deadline_at
    message.fanout = any(s.reason == "FANOUT" for s in plan.sends)
    for s in plan.sends:
        _send(tables, ctx, fx, message, account, s.channel, s.reason, s.attempt)
    # adaptive: a send counts in the account's read rates (the other strategies keep none)
    changed = changed or (bool(plan.sends) and ctx.config.policy.strategy == "adaptive")
    if plan.established:
        fx.outputs.append(records.lifecycle(account.account_id, account.lifecycle,
                                            account.pushes, now))
    if message.fanout or "APP" in message.sent:  # a late profile or device may still join
        account.recent = [r for r in account.recent if r[1] > now - grace]
        account.recent.append([message.message_id, message.created_at])
        changed = True
    if changed:
        tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    if plan.deadline_at is None:
        return
    if ctx.config.policy.strategy == "adaptive" and escalation_target(
            account, message, ctx.config.policy):
        _follow_plan(tables, ctx, fx, message, account, now, miss=False)
    elif plan.deadline_at <= round(now, 3):  # no use waiting
        _escalate(tables, ctx, fx, message, account, plan.deadline_at, miss=False)
    else:
        fx.dues.append(_due(message, "READ", plan.deadline_at))


def _send(tables: Tables, ctx: Context, fx: Effects, message: Message, account: Account,
          channel: str, reason: str, attempt: int) -> None:
    """Emit the account-level ChannelSend; an APP send also goes to each device (Method B)."""
    fx.counts["send_" + reason] += 1
    policy = ctx.config.policy
    note_send(account, message, channel, ctx.now,
              message.created_at + policy.read_window * policy.read_deadlines[message.importance]
              if policy.strategy == "adaptive" else None)
    _learn_kind(tables, ctx, message, account, channel, 0.0, 1.0)
    fx.outputs.append(records.channel_send(
        send_id(message.account_id, message.message_id, channel, None, attempt),
        message.message_id, message.account_id, channel, None, None, reason, attempt,
        message.importance, ctx.now, message.content))
    if channel == "APP":
        _deliver(tables, ctx, fx, message, account.devices, attempt)


def _deliver(tables: Tables, ctx: Context, fx: Effects, message: Message, devices: list[str],
             attempt: int) -> None:
    """Send an APP push to each wanted device on its original route, with a receipt deadline.

    A campaign's devices wait for the campaign's decision instead of a deadline of their own,
    unless this partition already knows the decision."""
    now = ctx.now
    for device_id in devices:
        if message.device_ids and device_id not in message.device_ids:
            continue
        dkey = device_key(message.account_id, device_id)
        raw = tables.get(DEVICES, dkey)
        if raw is None:
            fx.counts["unknown_device"] += 1
            continue
        device = DeviceRoutes.from_dict(raw)
        sid = send_id(message.account_id, message.message_id, "APP", device_id, attempt)
        record_send(device, sid, device.original, now)
        fx.counts["send_ORIGINAL_ROUTE"] += 1
        fx.outputs.append(records.channel_send(
            sid, message.message_id, message.account_id, "APP", device_id, device.original,
            "ORIGINAL_ROUTE", attempt, message.importance, now, message.content))
        due_at = round(now + ctx.config.receipt_deadline, 3)
        delivery = {"route": device.original, "attempt": attempt, "due_at": due_at,
                    "receipt": False, "done": False, "campaign": bool(message.campaign_id)}
        message.deliveries[device_id] = delivery
        decided = False
        if message.campaign_id:
            tally = _tally(tables, message.campaign_id, ctx.partition)
            tally["targeted"] += 1
            tally["due_at"] = max(tally["due_at"], due_at)
            decided = tally["decided"]
            _save_tally(tables, fx, tally, ctx.partition)
            if not decided:
                fx.waits.append((message.campaign_id,
                                 message_key(message.account_id, message.message_id)))
        if not message.campaign_id or decided:
            fx.dues.append(_due(message, "RECEIPT", due_at, device_id))
        _maintain(ctx, fx, device)
        tables.put(DEVICES, dkey, device.to_dict())


# -- acks --------------------------------------------------------------------------------------


def on_ack(tables: Tables, ack: dict[str, Any], ctx: Context) -> Effects:
    """A RECEIPT counts for the device's route statistics; a READ teaches the account's channels
    and cancels the message's escalation."""
    if tables.get(ACCOUNTS, account_key(ack["account_id"])) is None:
        raise Rejected(f"ack for unknown account {ack['account_id']!r}")
    if ack["kind"] == "RECEIPT":
        return _receipt(tables, ack, ctx)
    fx = Effects()
    key = message_key(ack["account_id"], ack["message_id"])
    raw = _unexpired(tables.get(MESSAGES, key), ctx.now)
    if raw is None:
        raise Rejected(f"ack for unknown message {ack['message_id']!r} "
                       f"of account {ack['account_id']!r}")
    message = Message.from_dict(raw)
    first = not message.reads
    if first and any(at > ctx.now for at in message.sent_at.values()):
        # a send (an escalation, a ladder's step) fired after this READ was stamped: it reached
        # the broker later than PUSHCASCADE_INPUT_SLACK allows for
        fx.counts["read_after_send"] += 1
    if first:
        _read_overdue(tables, ctx, fx, message)
    account = _account(tables, ack["account_id"], ctx)
    if not record_read(account, message, ack["channel"], ctx.config.policy, ctx.now):
        fx.counts["duplicate_ack"] += 1  # (never the first READ: nothing fired for it)
        return fx
    _learn_kind(tables, ctx, message, account, ack["channel"], 1.0, 0.0)
    tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    tables.put(MESSAGES, key, message.to_dict())
    if first:
        fx.outputs.append(records.delivery_result(
            message.message_id, account.account_id, "READ", "", ctx.now, ack["channel"],
            ack["device_id"], ack["route"], ack["send_id"]))
    return fx


def _read_overdue(tables: Tables, ctx: Context, fx: Effects, message: Message) -> None:
    """Fire the read deadlines that passed before this READ was stamped (ctx.now), earliest
    first and each at its own time, as if their timers had fired before the READ came: a late
    READ does not cancel a deadline, however late the worker runs."""
    while message.deadline_at is not None and ctx.now > message.deadline_at:
        due_at = message.deadline_at
        if not _read_due(tables, replace(ctx, now=due_at), fx, message, due_at):
            return
        fx.counts["deadline_before_read"] += 1


def _receipt(tables: Tables, ack: dict[str, Any], ctx: Context) -> Effects:
    """Count a RECEIPT for route statistics, and settle the message's delivery to the device."""
    fx = Effects()
    key = message_key(ack["account_id"], ack["message_id"])
    message_raw = _receipt_overdue(tables, ctx, fx, ack["device_id"] or "", key,
                                   _unexpired(tables.get(MESSAGES, key), ctx.now))
    dkey = device_key(ack["account_id"], ack["device_id"] or "")
    raw = tables.get(DEVICES, dkey)
    if raw is None:
        fx.counts["receipt_unknown_device"] += 1
        return fx
    device = DeviceRoutes.from_dict(raw)
    result = record_receipt(device, ack["send_id"], ctx.now)
    fx.counts["receipt_" + result.outcome.lower()] += 1
    _maintain(ctx, fx, device)
    tables.put(DEVICES, dkey, device.to_dict())
    if result.outcome != ReceiptOutcome.COUNTED:
        return fx
    delivery = (message_raw or {}).get("deliveries", {}).get(device.device_id)
    if message_raw is None or delivery is None or delivery["receipt"]:
        return fx
    own = (send_id(ack["account_id"], ack["message_id"], "APP", device.device_id, a)
           for a in (delivery["attempt"], delivery["attempt"] + 1))
    if ack["send_id"] not in own:  # it acks another send (a probe, another message)
        fx.counts["receipt_other_send"] += 1
        return fx
    delivery["receipt"] = True
    if delivery.get("campaign") and not delivery["done"] and result.route == delivery["route"]:
        tally = _tally(tables, message_raw["campaign_id"], ctx.partition)
        tally["acked"] += 1
        _save_tally(tables, fx, tally, ctx.partition)
    tables.put(MESSAGES, key, message_raw)
    return fx


def _receipt_overdue(tables: Tables, ctx: Context, fx: Effects, device_id: str, key: bytes,
                     raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Fall back from the device's receipt deadline that passed before this RECEIPT was
    stamped (ctx.now), at the deadline's own time, as if its timer had fired first; the
    message's value then."""
    delivery = (raw or {}).get("deliveries", {}).get(device_id)
    if (raw is None or delivery is None or delivery["receipt"] or delivery["done"]
            or ctx.now <= delivery["due_at"]):
        return raw
    message, due_at = Message.from_dict(raw), delivery["due_at"]
    if not _receipt_due(tables, replace(ctx, now=due_at), fx, message, device_id, due_at):
        return raw
    fx.counts["deadline_before_receipt"] += 1
    value = message.to_dict()
    tables.put(MESSAGES, key, value)
    return value


# -- account and device records ----------------------------------------------------------------


def on_settings(tables: Tables, rec: dict[str, Any], ctx: Context) -> Effects:
    """The user's override of primary and secondary channel; both null clears it."""
    account = _account(tables, rec["account_id"], ctx)
    account.primary, account.secondary = rec["primary"], rec["secondary"]
    tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    return Effects()


def on_profile(tables: Tables, rec: dict[str, Any], ctx: Context) -> Effects:
    """Which address channels are enabled; the addresses themselves are never stored."""
    fx = Effects()
    account = _account(tables, rec["account_id"], ctx)
    account.addresses = [c for c, f in PROFILE_CHANNELS if rec.get(f)]
    _reconsider(tables, ctx, fx, account, None)
    tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    return fx


def on_device(tables: Tables, rec: dict[str, Any], ctx: Context) -> Effects:
    """A device (de)registration: its routes, and APP enabled or disabled for its account."""
    fx = Effects()
    account = _account(tables, rec["account_id"], ctx)
    device_id = rec["device_id"]
    dkey = device_key(account.account_id, device_id)
    added = rec["active"] and device_id not in account.devices
    account.devices = [d for d in account.devices if d != device_id]
    if not rec["active"]:
        tables.delete(DEVICES, dkey)
    else:
        account.devices.append(device_id)
        previous = tables.get(DEVICES, dkey)
        reg = register_device(device_id, account.account_id, rec["manufacturer"], rec["model"],
                              rec["routes"], DeviceRoutes.from_dict(previous) if previous else None)
        fx.counts["unmapped_manufacturer"] += int(not reg.matched)
        fx.counts["unknown_route"] += len(reg.unknown_routes)
        _maintain(ctx, fx, reg.device)
        tables.put(DEVICES, dkey, reg.device.to_dict())
    _reconsider(tables, ctx, fx, account, device_id if added else None)
    tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    return fx


def _reconsider(tables: Tables, ctx: Context, fx: Effects, account: Account,
                new_device: str | None) -> None:
    """Within reach_grace of a request, a channel or device that turns up counts as if it had
    been there (records of different topics are not ordered): a waiting request is planned, a
    fan-out also goes out on the new channel, an APP push also reaches the new device."""
    for message_id in list(account.waiting):
        key = message_key(account.account_id, message_id)
        raw = tables.get(MESSAGES, key)
        if raw is None:
            account.waiting.remove(message_id)
            continue
        message = Message.from_dict(raw)
        _plan(tables, ctx, fx, account, message)
        tables.put(MESSAGES, key, message.to_dict())
    enabled = account.enabled()
    account.recent = [r for r in account.recent if r[1] > ctx.now - ctx.config.reach_grace]
    for message_id, _ in account.recent:
        key = message_key(account.account_id, message_id)
        raw = tables.get(MESSAGES, key)
        if raw is None:
            continue
        message = Message.from_dict(raw)
        if message.fanout:
            for channel in rank({}, enabled - set(message.sent), ctx.config.policy.order):
                message.sent.append(channel)
                _send(tables, ctx, fx, message, account, channel, "FANOUT", 0)
                fx.counts["late_channel"] += 1
        if new_device and "APP" in message.sent and new_device not in message.deliveries:
            _deliver(tables, ctx, fx, message, [new_device], 0)
            fx.counts["late_device"] += 1
        tables.put(MESSAGES, key, message.to_dict())


# -- deadlines ---------------------------------------------------------------------------------


def on_deadline(tables: Tables, due: Due, ctx: Context) -> Effects:
    """A deadline came due: escalate an unread message, fall back from a silent route, give up
    on a request that never found a channel, or expire a message. The state decides: a stale
    deadline (a READ or RECEIPT came first, or it already fired) changes nothing."""
    if due.kind == "EXPIRE":
        return expire(tables, due.account_id, due.message_id, due.due_at, ctx)
    fx = Effects()
    key = message_key(due.account_id, due.message_id)
    raw = tables.get(MESSAGES, key)
    due_at = due.due_at
    if raw is None:
        fx.counts["deadline_stale"] += 1
        return fx
    message = Message.from_dict(raw)
    kind = due.kind
    if kind == "RECEIPT":
        done = _receipt_due(tables, ctx, fx, message, due.device_id or "", due_at)
    elif kind == "GRACE":
        done = _grace_due(tables, ctx, fx, message, due_at)
    else:
        done = _read_due(tables, ctx, fx, message, due_at)
    if done:
        tables.put(MESSAGES, key, message.to_dict())
    else:
        fx.counts["deadline_stale"] += 1
    return fx


def _read_due(tables: Tables, ctx: Context, fx: Effects, message: Message,
              due_at: float) -> bool:
    """Escalate an unread message to its next channel: once, or (a ladder) with a read deadline
    of its own while channels remain."""
    if not is_due(message, due_at, ctx.now + 0.001):
        return False
    _escalate(tables, ctx, fx, message, _account(tables, message.account_id, ctx), due_at)
    return True


def _escalate(tables: Tables, ctx: Context, fx: Effects, message: Message, account: Account,
              due_at: float, miss: bool = True) -> None:
    """Escalate a message whose read deadline (due_at) passed (a `miss` of its channel), or
    whose wait there is nothing: to the next channel, once or (a ladder) with a read deadline
    of its own while channels remain; adaptive follows its plan for an account that reads."""
    policy = ctx.config.policy
    target = escalation_target(account, message, policy)
    if target and policy.strategy == "adaptive":
        _follow_plan(tables, ctx, fx, message, account, due_at, miss)
        return
    message.deadline_at = None
    fx.outputs.append(records.escalation(message.message_id, message.account_id,
                                         message.sent[-1], target, due_at, ctx.now))
    if target:
        message.sent.append(target)
        _send(tables, ctx, fx, message, account, target, "ESCALATION", len(message.sent) - 1)
        if climbs(policy) and escalation_target(account, message, policy):
            message.deadline_at = round(ctx.now + policy.read_deadlines[message.importance], 3)
            fx.dues.append(_due(message, "READ", message.deadline_at))
    else:
        fx.outputs.append(records.delivery_result(
            message.message_id, message.account_id, "EXHAUSTED",
            "read deadline passed; no channel left", ctx.now))
    message.escalated = message.deadline_at is None


def _follow_plan(tables: Tables, ctx: Context, fx: Effects, message: Message, account: Account,
                 due_at: float, miss: bool) -> None:
    """adaptive: send what the message's plan sends now (and plan again), or wait for its next
    send, or (no channel worth a send once the read deadline after the last send passed) give
    up. A wait on the primary alone that ends unread is a `miss` of it (once a message, not at
    each postponement): after EXPLORE_AFTER in a row the next channel goes out whatever it
    costs (the account may have moved)."""
    policy = ctx.config.policy
    primary = message.sent[0]
    waited = miss and len(message.sent) == 1  # on the primary alone
    missed = account.missed.get(primary, 0) + waited
    must = message.importance in ALWAYS or missed >= EXPLORE_AFTER
    step = next_send(account, message, ctx.now, policy, must)
    give_up = round(max(message.sent_at.values())
                    + policy.read_deadlines[message.importance], 3)
    sending = step.channel if step.at <= round(ctx.now, 3) else None
    if waited and (sending or (step.channel is None and give_up <= round(ctx.now, 3))):
        account.missed[primary] = missed  # once a message, when its wait ends (not postponed)
        tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    message.deadline_at = None
    if sending:
        fx.outputs.append(records.escalation(message.message_id, message.account_id,
                                             message.sent[-1], sending, due_at, ctx.now))
        message.sent.append(sending)
        _send(tables, ctx, fx, message, account, sending, "ESCALATION", len(message.sent) - 1)
        tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
        if escalation_target(account, message, policy):
            _follow_plan(tables, ctx, fx, message, account, ctx.now, miss=False)
        message.escalated = message.deadline_at is None
        return
    if step.channel is not None or give_up > round(ctx.now, 3):
        message.deadline_at = step.at if step.channel is not None else give_up
        fx.dues.append(_due(message, "READ", message.deadline_at))
    else:
        fx.counts["escalation_not_worth"] += 1
        fx.outputs.append(records.escalation(message.message_id, message.account_id,
                                             message.sent[-1], None, due_at, ctx.now))
        fx.outputs.append(records.delivery_result(
            message.message_id, message.account_id, "EXHAUSTED",
            f"read deadline passed; {step.best or 'no channel'} not worth a send for a "
            f"{message.importance} push (reads it adds less their price {step.gain:.3g})",
            ctx.now))
    message.escalated = message.deadline_at is None


def _grace_due(tables: Tables, ctx: Context, fx: Effects, message: Message,
               due_at: float) -> bool:
    """A request that found no channel within its grace period is unreachable."""
    if message.waiting_until is None or message.waiting_until != due_at:
        return False
    account = _account(tables, message.account_id, ctx)
    if message.message_id in account.waiting:
        account.waiting.remove(message.message_id)
        tables.put(ACCOUNTS, account_key(account.account_id), account.to_dict())
    message.waiting_until = None
    fx.counts["unreachable"] += 1
    fx.outputs.append(records.delivery_result(
        message.message_id, message.account_id, "UNREACHABLE",
        "no enabled channel: no active device and no address", ctx.now))
    return True


def _receipt_due(tables: Tables, ctx: Context, fx: Effects, message: Message, device_id: str,
                 due_at: float) -> bool:
    """A device's receipt deadline passed: resend on its best alternative, once."""
    delivery = message.deliveries.get(device_id)
    if (delivery is None or delivery["receipt"] or delivery["done"]
            or delivery["due_at"] != due_at):
        return False
    if delivery.get("campaign"):
        tally = _tally(tables, message.campaign_id or "", ctx.partition)
        if not tally["decided"]:
            return False
        if not tally["fallback"]:
            delivery["done"] = True
            return True
    _fall_back(tables, ctx, fx, message, device_id, delivery)
    return True


def _fall_back(tables: Tables, ctx: Context, fx: Effects, message: Message, device_id: str,
               delivery: dict[str, Any]) -> None:
    """Resend the message to a device on its best alternative route (or report that none is)."""
    delivery["done"] = True
    dkey = device_key(message.account_id, device_id)
    raw = tables.get(DEVICES, dkey)
    device = DeviceRoutes.from_dict(raw) if raw else None
    attempt = delivery["attempt"] + 1
    sid = send_id(message.account_id, message.message_id, "APP", device_id, attempt)
    routes: list[str] = []
    if device is not None and ctx.config.probe.bandit:
        routes = [r for r in [choose_fallback(device, ctx.ranking(device), ctx.now, sid)] if r]
    elif device is not None:
        routes = fallback_routes(device, ctx.ranking(device), top_n=1)
    if device is None or not routes:
        fx.counts["no_fallback_route"] += 1
        fx.outputs.append(records.delivery_result(
            message.message_id, message.account_id, "FAILED",
            "no receipt on the original route and no alternative route", ctx.now,
            "APP", device_id, delivery["route"]))
        return
    record_send(device, sid, routes[0], ctx.now)
    tables.put(DEVICES, dkey, device.to_dict())
    fx.counts["send_FALLBACK_ROUTE"] += 1
    fx.outputs.append(records.channel_send(
        sid, message.message_id, message.account_id, "APP", device_id, routes[0],
        "FALLBACK_ROUTE", attempt, message.importance, ctx.now, message.content))


def expire(tables: Tables, account_id: str, message_id: str, due_at: float,
           ctx: Context) -> Effects:
    """Remove a message's state after its last deadline plus the retention (the account keeps
    what it learned); a message with something still pending is kept a retention longer."""
    fx = Effects()
    key = message_key(account_id, message_id)
    raw = tables.get(MESSAGES, key)
    if raw is None or raw.get("expires_at") != due_at:
        return fx
    message = Message.from_dict(raw)
    if _pending(message):
        message.expires_at = round(ctx.now + ctx.config.retention, 3)
        tables.put(MESSAGES, key, message.to_dict())
        fx.dues.append(_due(message, "EXPIRE", message.expires_at))
        fx.counts["expiry_postponed"] += 1
        return fx
    tables.delete(MESSAGES, key)
    fx.counts["expired"] += 1
    return fx


def _pending(message: Message) -> bool:
    """Whether a message still waits on something (a channel, a READ, a device's receipt)."""
    return (message.waiting_until is not None
            or (message.deadline_at is not None and not message.escalated)
            or any(not d["receipt"] and not d["done"] for d in message.deliveries.values()))


def _unexpired(raw: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """A stored message as an ack stamped at `now` finds it: None once its expiry passed with
    nothing pending (a worker on time had removed it; one running late has not yet)."""
    at = (raw or {}).get("expires_at")
    if raw is None or at is None or now <= at or _pending(Message.from_dict(raw)):
        return raw
    return None


# -- campaigns ---------------------------------------------------------------------------------


def on_campaign_decision(tables: Tables, rec: dict[str, Any], ctx: Context) -> Effects:
    """The campaign's owner decided: remember it in this partition's tally (the plumbing then
    settles each waiting delivery with `settle_campaign`)."""
    fx = Effects()
    tally = _tally(tables, rec["campaign_id"], ctx.partition)
    if tally["decided"]:
        fx.counts["decision_repeat"] += 1
        return fx
    tally["decided"], tally["fallback"] = True, rec["fallback"]
    tables.put(TALLIES, tally_key(rec["campaign_id"], ctx.partition), tally)
    return fx


def settle_campaign(tables: Tables, key: bytes, campaign_id: str, ctx: Context) -> Effects:
    """Apply this partition's known campaign decision to one message's silent devices."""
    fx = Effects()
    raw = tables.get(MESSAGES, key)
    tally = _tally(tables, campaign_id, ctx.partition)
    if raw is None or not tally["decided"]:
        return fx
    message = Message.from_dict(raw)
    fx.counts["campaign_settled"] += 1
    for device_id, delivery in message.deliveries.items():
        if not delivery.get("campaign") or delivery["receipt"] or delivery["done"]:
            continue
        if tally["fallback"]:
            _fall_back(tables, ctx, fx, message, device_id, delivery)
        else:
            delivery["done"] = True
    tables.put(MESSAGES, key, message.to_dict())
    return fx


def tally_output(tables: Tables, campaign_id: str, partition: int, now: float) -> Output | None:
    """The CampaignEvent that reports this partition's current tally of a campaign."""
    tally = tables.get(TALLIES, tally_key(campaign_id, partition))
    if tally is None:
        return None
    return records.campaign_tally(campaign_id, partition, tally["targeted"], tally["acked"],
                                  tally["due_at"], now)


def _tally(tables: Tables, campaign_id: str, partition: int) -> dict[str, Any]:
    return tables.get(TALLIES, tally_key(campaign_id, partition)) or {
        "campaign_id": campaign_id, "targeted": 0, "acked": 0, "due_at": 0.0,
        "decided": False, "fallback": False}


def _save_tally(tables: Tables, fx: Effects, tally: dict[str, Any], partition: int) -> None:
    tables.put(TALLIES, tally_key(tally["campaign_id"], partition), tally)
    fx.tallies.add(tally["campaign_id"])


# -- shared ------------------------------------------------------------------------------------


def pending_work(value: dict[str, Any]) -> tuple[list[Due], list[str]]:
    """A stored message's pending deadlines, and the campaign it waits on (if it does): what a
    worker must remember for the partitions it takes over."""
    message_id, account_id, partition = value["message_id"], value["account_id"], value["partition"]

    def due(kind: str, at: float, device_id: str | None = None) -> Due:
        return Due(at, partition, message_id, account_id, kind, device_id, message_id)

    dues: list[Due] = []
    if value.get("deadline_at") is not None and not value.get("escalated"):
        dues.append(due("READ", value["deadline_at"]))
    if value.get("waiting_until") is not None:
        dues.append(due("GRACE", value["waiting_until"]))
    if value.get("expires_at") is not None:
        dues.append(due("EXPIRE", value["expires_at"]))
    waits: list[str] = []
    for device_id, d in value.get("deliveries", {}).items():
        if d["receipt"] or d["done"]:
            continue
        if d.get("campaign"):
            waits.append(value["campaign_id"])
        dues.append(due("RECEIPT", d["due_at"], device_id))
    return dues, waits[:1]


#: The kinds of deadline a message has (pending_work).
MESSAGE_DEADLINES = frozenset({"READ", "GRACE", "EXPIRE", "RECEIPT"})


def waits_index(old: dict[str, Any] | None,
                new: dict[str, Any] | None) -> list[tuple[str, bytes, Any]]:
    """The waits-table writes of one write of a message: the campaign it now waits on
    written, one it no longer waits on deleted."""
    def waits(value: dict[str, Any] | None) -> dict[bytes, dict[str, Any]]:
        if value is None or not value.get("campaign_id"):  # only a campaign's message waits
            return {}
        key = message_key(value["account_id"], value["message_id"])
        return {wait_key(c, key): {"campaign_id": c, "key": key.decode(),
                                   "partition": value["partition"]}
                for c in pending_work(value)[1]}
    before, after = waits(old), waits(new)
    return [(WAITS, k, None) for k in before.keys() - after.keys()] + [
        (WAITS, k, v) for k, v in after.items() if k not in before]


def _due(message: Message, kind: str, at: float, device_id: str | None = None) -> Due:
    return Due(at, message.partition, message.message_id, message.account_id, kind, device_id,
               message.message_id)


def _account(tables: Tables, account_id: str, ctx: Context) -> Account:
    """The account's state; for adaptive with what its kind reads as its read rates' prior."""
    raw = tables.get(ACCOUNTS, account_key(account_id))
    account = Account.from_dict(raw) if raw is not None else Account(account_id)
    policy = ctx.config.policy
    if policy.strategy == "adaptive":
        settle(account, ctx.now)
    kind = kinds.kind_of(account, policy) if policy.strategy == "adaptive" else None
    if kind is not None:  # (an account that never read has no kind: no lookup)
        stats = tables.get(KINDS, kinds_key(ctx.partition)) or {}
        account.prior = kinds.priors(stats, kind, account.enabled(), len(account.devices))
        account.prior_strength = kinds.STRENGTH
    return account


def _learn_kind(tables: Tables, ctx: Context, message: Message, account: Account, channel: str,
                reads: float, sends: float) -> None:
    """adaptive: count a message's send or read on a channel for its account's kind."""
    if message.kind is None:
        return
    key = kinds_key(ctx.partition)
    stats = tables.get(KINDS, key) or {}
    kinds.count(stats, message.kind, channel, len(account.devices), reads, sends)
    tables.put(KINDS, key, stats)


def _maintain(ctx: Context, fx: Effects, device: DeviceRoutes) -> None:
    """On every device event: expire lost probes, send due probes, re-evaluate the target."""
    now, cfg = ctx.now, ctx.config.probe
    if cfg.bandit:  # adaptive: posteriors start from the fleet's priors
        cfg = ctx.ranking(device)
    for probe in plan_probes(device, now, cfg, ctx.budget):
        fx.counts["probe_" + probe.kind.lower()] += 1
        fx.outputs.append(records.channel_send(
            probe.send_id, probe.send_id, device.account_id, "APP", device.device_id,
            probe.route, "PROBE", 0, "LOW", now))
    _retarget(ctx, fx, device, cfg)


def _retarget(ctx: Context, fx: Effects, device: DeviceRoutes, cfg: ProbeConfig) -> bool:
    """Re-evaluate the device's target route; a change is emitted (RouteChange) and True."""
    change = evaluate_target(device, cfg, ctx.now)
    if change is None:
        return False
    rate = change.rate if change.rate is not None else effective_rate(
        device.stats[change.target[0]], cfg.probe_count_first)
    fx.outputs.append(records.route_change(
        device.device_id, device.account_id, change.previous[0] if change.previous else None,
        change.target[0], rate or 0.0, change.reason, ctx.now))
    return True


#: The handler of each input (unprefixed topic, record name) of an account partition.
HANDLERS: dict[tuple[str, str], Handler] = {
    ("push.requests", "PushRequest"): on_request,
    ("push.acks", "Ack"): on_ack,
    ("account.settings", "AccountSettings"): on_settings,
    ("account.profiles", "AccountProfile"): on_profile,
    ("device.registry", "DeviceRegistration"): on_device,
    ("campaign.decisions", "CampaignDecision"): on_campaign_decision,
}
