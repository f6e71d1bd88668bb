"""The simulator's outcomes do not depend on how it is served: every vendor, a fixed seed and
population, the same acceptances, refusals, receipts and reads as the hypercorn-served
simulator recorded at 9f805ca (tests/integration/data/simulator_outcomes.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from connectors.adapters import Accepted, Delivery
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from tests.integration.test_providers import (
    ADDRESSES,
    TARGETS,
    Capture,
    gateway,  # noqa: F401  (the fixture)
    send,
)

RECORDED = Path(__file__).with_name("data") / "simulator_outcomes.json"
SENDS = 12  # per vendor


def _delivery(name: str, capture: Capture, i: int) -> Delivery:
    """Send i to the vendor called name: ids fixed, so the seed decides the same way."""
    send_id, target = f"golden-{name}-{i}", TARGETS[name]
    app = name not in ADDRESSES
    record = {"send_id": send_id, "message_id": f"m-{i}", "account_id": f"acct-{i % 5}",
              "channel": "APP" if app else target, "device_id": f"dev-{i % 7}" if app else None,
              "route": target if app else None, "reason": "PRIMARY", "attempt": 0,
              "importance": "HIGH", "title": "Parcel", "body": "at the door",
              "read_action": "BUTTON", "link": None, "sent_at": 0}
    return Delivery(send=record, address=ADDRESSES.get(name, f"token-{name}-{i % 7}"),
                    read_url=f"{capture.url}/r/{send_id}?t=sig",
                    receipt_token=f"rt.{send_id}.sig")


def outcomes(capture: Capture) -> dict[str, Any]:
    """Each send's answer, and whether its receipt was posted and its link opened."""
    sim = Simulator(SimulatorSettings(port=0, seed=11, gateway_url=capture.url))
    sim.set_population({"receipt": {"*": 0.5}, "read": {"*": 0.5},
                        "receipt_delay_ms": [1, 5], "read_delay_ms": [1, 5]})
    for target in TARGETS.values():
        sim.set_behaviour(target, {"accept": 0.7})
    answers: dict[str, str] = {}
    with SimulatorThread(sim) as running:
        for name in sorted(TARGETS):
            for i in range(SENDS):
                item = _delivery(name, capture, i)
                answer = send(running, name, item)
                answers[item.send["send_id"]] = ("accepted" if isinstance(answer, Accepted)
                                                 else f"refused {answer.code}")
        running.idle()
    posted = b"".join(body for _, _, body in capture.posts)
    opened = " ".join(capture.gets)
    return {sid: {"answer": answer, "receipt": f"rt.{sid}.sig".encode() in posted,
                  "read": f"/r/{sid}?" in opened} for sid, answer in answers.items()}


def test_the_simulator_answers_a_seed_and_population_as_it_did(gateway: Capture) -> None:  # noqa: F811
    seen = outcomes(gateway)
    if os.environ.get("PUSHCASCADE_RECORD_SIMULATOR_OUTCOMES"):  # how the record was made
        RECORDED.write_text(json.dumps(seen, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(RECORDED.read_text())
    assert seen == recorded
    kinds = {(o["answer"] == "accepted", o["receipt"], o["read"]) for o in seen.values()}
    assert len(kinds) >= 4  # refusals, receipts without reads, reads: not all one way
