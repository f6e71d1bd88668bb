"""What the dispatcher's lease rests on (dispatch_policy.Lease, Dispatcher._probe,
streams.kafka.commit_as): the group's coordinator refuses an offset commit from a member it
replaced while that member was frozen, a client that has rejoined since commits as another
member (which the broker accepts, so the member id is checked too), and the commits of the
member that took the partitions over are accepted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaException, TopicPartition

from streams.kafka import admin, consumer

pytestmark = pytest.mark.broker

#: A group member in a process of its own: it prints its assignments and losses, and after each
#: gap between its polls (a freeze) commits the offsets of the partitions it held before it,
#: synchronously, as the member they were assigned to: at once, or (`rejoin`, after its second
#: freeze) once it has been assigned partitions again under a new member id.
MEMBER = r"""
import sys, time
from confluent_kafka import KafkaException, TopicPartition
from streams.kafka import commit_as, consumer
bootstrap, group, topic, rejoin = sys.argv[1:4] + [sys.argv[4] == "rejoin"]
held = {}  # the last assignment: its member id and partitions (kept when they are lost)
def assigned(c, ps):
    held.update(member=c.memberid(), partitions=[p.partition for p in ps])
    print("ASSIGNED", held["partitions"], flush=True)
def lost(c, ps): print("LOST", flush=True)
def revoked(c, ps): print("REVOKED", flush=True)
member = consumer(bootstrap, group)
member.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=lost)
last, freezes = time.monotonic(), 0
while True:
    member.poll(0.1)
    now = time.monotonic()
    if now - last > 3 and held:
        freezes += 1
        before = dict(held)
        while rejoin and freezes == 2 and held["member"] == before["member"] \
                and time.monotonic() < now + 30:
            member.poll(0.1)
        offsets = [TopicPartition(topic, p, 0) for p in before["partitions"]]
        try:
            same = commit_as(before["member"], member, offsets)
            print("COMMIT ACCEPTED" if same else "COMMIT AS ANOTHER MEMBER", flush=True)
        except KafkaException as exc:
            print("COMMIT REFUSED", exc.args[0].name(), flush=True)
    last = time.monotonic()
"""


def lines_until(proc: subprocess.Popen[str], word: str, timeout: float,
                idle: Callable[[], object] = lambda: time.sleep(0.05)) -> list[str]:
    """The child's output lines up to the first one starting with `word` (`idle` between)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen.append(line.strip())
            if line.startswith(word):
                return seen
        else:
            idle()
    raise AssertionError(f"no {word} within {timeout:.0f} s: {seen}")


@pytest.mark.parametrize("when", ["at-once", "rejoin"])
def test_a_member_replaced_while_frozen_has_its_commit_refused_one_that_was_not_accepted(
        settings, when):
    bootstrap = settings.connections.kafka_bootstrap_servers
    topic, group = settings.topic("fencing"), settings.topic("fencing-group")
    from confluent_kafka.admin import NewTopic

    client = admin(bootstrap)
    for future in client.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(30)
    child = subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, group, topic, when],
                             stdout=subprocess.PIPE, text=True)
    successor = None
    try:
        lines_until(child, "ASSIGNED", 60)
        os.kill(child.pid, signal.SIGSTOP)  # a stall within its 6 s session: still the owner
        time.sleep(3.5)
        os.kill(child.pid, signal.SIGCONT)
        assert lines_until(child, "COMMIT", 30)[-1] == "COMMIT ACCEPTED"
        os.kill(child.pid, signal.SIGSTOP)  # frozen past its session
        successor = consumer(bootstrap, group)
        successor.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(successor.assignment()) < 2:
            assert time.monotonic() < deadline, "the successor never took both partitions"
            successor.poll(0.2)
        os.kill(child.pid, signal.SIGCONT)
        # refused by the coordinator, or (once librdkafka saw the loss and rejoined) accepted
        # from another member: never as the old one
        seen = lines_until(child, "COMMIT", 45, idle=lambda: successor.poll(0.05))
        assert seen[-1] != "COMMIT ACCEPTED", seen
        print("thawed after its successor took over:", seen)
        # the coordinator knows the successor: its commit is taken
        for _ in range(20):
            successor.poll(0.1)
        try:
            successor.commit(offsets=[TopicPartition(topic, p, 0) for p in (0, 1)],
                             asynchronous=False)
        except KafkaException as exc:  # a rebalance the thawed member began: once more
            assert exc.args[0].name() == "REBALANCE_IN_PROGRESS", exc
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait(10)
        if successor is not None:
            successor.close()
