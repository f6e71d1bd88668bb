"""The whole loop under steady load for the fault-injection scenarios: its processes by kind
(kill, freeze, restart, wait until ready), a load thread, and `pushcascade verify` after each
fault, with the table printed and new violations told apart from earlier scenarios' ones."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.producer import DeliveryError, PushProducer, RecordProducer
from connectors.serving import free_port
from streams.harness import Process, start_python, wait_accounts, wait_idle
from streams.harness.crowd import Crowd
from streams.harness.loop import DEMO_TUNING, Loop
from streams.lag import committed, end_offsets
from streams.settings import Settings
from streams.verify import Check, run_settled, violations

#: The CLI command of each process kind the scenarios break.
COMMANDS = {"worker": "worker", "dispatch": "dispatch", "gateway": "acks-gateway",
            "sink": "sink"}
#: The demo's profile with shorter deadlines (a scenario drains sooner) and accounts
#: established after one push, so that read deadlines and escalations come within seconds.
TUNING: dict[str, Any] = {**DEMO_TUNING, "new_account_pushes": 1, "read_deadline_low": 2,
                          "read_deadline_normal": 2, "read_deadline_high": 2,
                          "read_deadline_urgent": 2, "receipt_deadline": 2}
#: After the last request its read deadline and the receipt deadline of an APP send its
#: escalation makes have come due (the `seed` strategy escalates once; anything later is
#: pending for verify, which run_settled asks again).
FIRST_TIMERS = TUNING["read_deadline_high"] + TUNING["receipt_deadline"]
#: verify's cut-off (s): anything whose last deadline is younger is pending, not judged.
SETTLE = 2.0
#: Seconds the drain waits for the workers to commit what they read (verify judges the rest).
IDLE_TIMEOUT = 60.0
#: Accounts of the demo's population that the load cycles through (each established after
#: its first push, so from the second round on every push has a read deadline).
ACCOUNTS = 30
#: Steady load (requests/s): each request makes 2-4 provider calls, probes and acks besides,
#: and the provider simulator (one Python process) answers ~150 calls/s on this machine.
RATE = 3.0
#: Seconds one provider request may take (the slow-provider scenario answers later).
PROVIDER_TIMEOUT = 2.0


#: Seconds a process kind may take to start and become ready on the loaded 2-core machine.
READY_TIMEOUT = 120.0


def table_text(checks: list[Check], title: str) -> str:
    """verify's own table (streams.cli.verify.table), rendered to text."""
    from rich.console import Console

    from streams.cli.verify import table

    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(table(checks, title))
    return console.file.getvalue()  # type: ignore[attr-defined]


def violation_keys(checks: list[Check]) -> set[tuple[str, str]]:
    """Each violation by its check and subject (the text before its first colon: the message
    or send it names; the rest may hold ages that grow between runs)."""
    return {(c.name, v.split(":", 1)[0]) for c in checks for v in c.violations}


class Load:
    """Push requests at `rate` per second from a thread, the crowd's as the demo makes them
    (round-robin over its accounts, one new message each, some in campaigns); paused and
    resumed between scenarios."""

    def __init__(self, settings: Settings, crowd: Crowd, rate: float) -> None:
        self.settings, self.crowd, self.rate = settings, crowd, rate
        self.sent = 0
        self.last_at = 0.0  # time.time() of the last request confirmed
        self.unconfirmed: list[str] = []  # the broker's refusals (say so; they are not lost)
        self._on, self._idle, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def _producer(self) -> PushProducer:
        return PushProducer(self.settings.connections.kafka_bootstrap_servers,
                            topic_prefix=self.settings.tuning.topic_prefix)

    def _run(self) -> None:
        out, credit, tick = self._producer(), 0.0, time.monotonic()
        while not self._stop.is_set():
            if not self._on.is_set():
                self._idle.set()
                self._on.wait(0.1)
                credit, tick = 0.0, time.monotonic()
                continue
            self._idle.clear()
            now = time.monotonic()
            credit += (now - tick) * self.rate
            tick = now
            while credit >= 1:
                out.push(self.crowd.request(self.sent, int(time.time() * 1000)))
                self.sent += 1
                credit -= 1
            try:
                out.flush(60)
                self.last_at = time.time()
            except DeliveryError as exc:
                self.unconfirmed.append(str(exc))
                out = self._producer()
            time.sleep(0.1)
        out.flush(30)

    def resume(self) -> None:
        """Requests flow again."""
        self._on.set()

    def pause(self, timeout: float = 90.0) -> None:
        """Stop sending; returns once the last request is confirmed."""
        self._on.clear()
        if not self._idle.wait(timeout):
            raise TimeoutError(f"the load did not pause within {timeout}s")

    def close(self) -> None:
        """End the thread."""
        self._stop.set()
        self._on.set()
        self._thread.join(60)


@dataclass
class Service:
    """One process of the loop: its kind, name, readiness URL and the running Process."""

    kind: str
    name: str
    ready_url: str
    proc: Process
    extra_env: dict[str, str] = field(default_factory=dict)


class Stack:
    """The loop's processes on `settings` with the demo's deadlines, a crowd of `accounts`
    registered, and steady load; every process is stopped by close()."""

    def __init__(self, settings: Settings, var_dir: Path, accounts: int, rate: float,
                 workers: int = 2, **tuning: Any) -> None:
        self.settings, self.var_dir = settings, var_dir
        self.crowd = Crowd.load()
        self.crowd.members = self.crowd.members[:accounts]
        self.loop = Loop(settings, var_dir, "faults", workers=0, seed=self.crowd.spec.seed,
                         profile=TUNING, **tuning)
        self.services: list[Service] = []
        self.known: set[tuple[str, str]] = set()  # violations earlier scenarios reported
        self.stalled = ""  # why the last drain's wait for the workers' commits ran out
        self.load: Load | None = None
        self.steady = rate
        try:
            self.loop.start()
            ports = self.loop.ports
            for proc in self.loop.procs:
                kind = next(k for k, c in COMMANDS.items() if proc.name.endswith(f"-{c}"))
                url = (f"{self.loop.gateway_url}/readyz" if kind == "gateway" else
                       f"http://127.0.0.1:{ports[kind]}/readyz")
                self.services.append(Service(kind, COMMANDS[kind], url, proc))
            for i in range(workers):
                self.add_worker(f"worker{i}")
            self.register()
            self.load = Load(settings, self.crowd, rate)
        except BaseException:
            self.close()
            raise

    # -- processes ---------------------------------------------------------------------------

    @property
    def sim_url(self) -> str:
        """The provider simulator's base URL."""
        assert self.loop.simulator is not None
        return self.loop.simulator.url

    def _start(self, kind: str, name: str, extra: dict[str, str]) -> Process:
        proc = start_python("streams.cli", COMMANDS[kind],
                            *(["--loglevel", "info"] if kind == "worker" else []),
                            env={**self.loop.env(), **extra}, workdir=self.var_dir,
                            name=f"faults-{name}")
        self.loop.procs.append(proc)  # the loop stops it, whatever happens
        return proc

    def add_worker(self, name: str, wait: bool = True) -> Service:
        """Start one more stream worker (its own metrics port) and, unless told not to, wait
        until it is ready."""
        port = free_port()
        extra = {"PUSHCASCADE_METRICS_PORT": str(port)}
        service = Service("worker", name, f"http://127.0.0.1:{port}/readyz",
                          self._start("worker", name, extra), extra)
        self.services.append(service)
        if wait:
            self.wait_ready(service)
        return service

    def wait_logged(self, service: Service, text: str, timeout: float = 60.0) -> float:
        """Wait until the service's log holds `text`; seconds it took."""
        start = time.monotonic()
        while text not in service.proc.logs():
            service.proc.check()
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{service.name} did not log {text!r} within {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - start

    def add_dispatcher(self, name: str) -> Service:
        """Start one more dispatcher in the same group and wait until it has partitions."""
        port = free_port()
        extra = {"PUSHCASCADE_DISPATCH_METRICS_PORT": str(port)}
        service = Service("dispatch", name, f"http://127.0.0.1:{port}/readyz",
                          self._start("dispatch", name, extra), extra)
        self.services.append(service)
        self.wait_ready(service)
        return service

    def of(self, kind: str) -> list[Service]:
        """The services of one kind, in start order."""
        return [s for s in self.services if s.kind == kind]

    def remove(self, service: Service, grace: float = 15.0) -> None:
        """Stop a service for good (SIGTERM, bounded wait, then SIGKILL by its pid)."""
        service.proc.stop(grace)
        self.services.remove(service)

    def kill(self, service: Service) -> None:
        """SIGKILL the service's process by its own pid (the crash case) and reap it."""
        service.proc.kill()

    def freeze(self, service: Service) -> None:
        """SIGSTOP the service's process."""
        os.kill(service.proc.pid, signal.SIGSTOP)

    def thaw(self, service: Service) -> None:
        """SIGCONT the service's process."""
        os.kill(service.proc.pid, signal.SIGCONT)

    def restart(self, service: Service) -> None:
        """Start the service's process again (same name, data dir, ports) and wait until it
        is ready."""
        if service.proc.running():
            raise AssertionError(f"{service.name} is still running")
        self.loop.procs.remove(service.proc)
        service.proc = self._start(service.kind, service.name, service.extra_env)
        self.wait_ready(service)

    def wait_ready(self, service: Service, timeout: float = READY_TIMEOUT) -> float:
        """Wait until the service answers 200 on /readyz; seconds it took. Fails at once, with
        its log, when its process exits."""
        start = time.monotonic()
        while True:
            service.proc.check()
            try:
                with urllib.request.urlopen(service.ready_url, timeout=5) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503: not ready
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{service.name} not ready within {timeout}s:\n"
                                   f"{service.proc.tail(40)}")
            time.sleep(0.3)

    def check(self) -> None:
        """Raise ProcessExited (with its log) when a service has exited."""
        for service in self.services:
            service.proc.check()

    def workers(self) -> list[Process]:
        """The stream workers' processes."""
        return [s.proc for s in self.of("worker")]

    def register(self) -> None:
        """Register the crowd (profiles, devices) and wait until the workers hold them."""
        bootstrap = self.settings.connections.kafka_bootstrap_servers
        with RecordProducer(bootstrap, topic_prefix=self.settings.tuning.topic_prefix) as out:
            for topic, record in self.crowd.registrations(int(time.time() * 1000)):
                out.send(topic, record)
        wait_accounts(self.settings, [m.account_id for m in self.crowd.members],
                      timeout=READY_TIMEOUT, workers=self.workers())
        self.loop.set_population(self.crowd.document(time.time()))

    # -- conditions --------------------------------------------------------------------------

    def wait_group_past(self, group: str, topic: str, timeout: float = 90.0) -> float:
        """Wait until consumer group `group` (unprefixed) has committed every partition of
        `topic` up to its end as of now (what proves the partitions are being handled);
        seconds it took."""
        bootstrap = self.settings.connections.kafka_bootstrap_servers
        prefix = self.settings.tuning.topic_prefix
        ends = {tp: end for tp, end in end_offsets(bootstrap, [prefix + topic]).items() if end}
        start = time.monotonic()
        while True:
            self.check()
            have = committed(bootstrap, prefix + group, ends)
            if all(have[tp] >= end for tp, end in ends.items()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{group} did not commit {topic} to {ends} within "
                                   f"{timeout}s (have {have})")
            time.sleep(0.3)

    def wait_grown(self, topic: str, timeout: float = 60.0) -> float:
        """Wait until every partition of `topic` holds records written after now; seconds."""
        bootstrap = self.settings.connections.kafka_bootstrap_servers
        full = self.settings.topic(topic)
        before = end_offsets(bootstrap, [full])
        start = time.monotonic()
        while True:
            self.check()
            now = end_offsets(bootstrap, [full])
            if all(now[tp] > end for tp, end in before.items()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{topic} did not grow on every partition in {timeout}s")
            time.sleep(0.3)

    # -- the provider simulator --------------------------------------------------------------

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        """Call the provider simulator's control API (/_control/PATH)."""
        import httpx

        answer = httpx.request(method, f"{self.sim_url}/_control/{path}", json=body, timeout=10)
        answer.raise_for_status()

    def sim_stats(self) -> dict[str, int]:
        """The provider simulator's counts (accept.X, reject.X, outage.X, ...)."""
        import httpx

        return dict(httpx.get(f"{self.sim_url}/_control/sends", timeout=30).json()["stats"])

    def dispatch_count(self, counter: str, provider: str) -> float:
        """pushcascade_dispatch_<counter>_total of one provider on the first dispatcher
        (`retries`: calls repeated; `unknown`: calls cut off after they may have reached it)."""
        import re

        port = self.loop.ports["dispatch"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            text = page.read().decode()
        found = re.search(
            rf'pushcascade_dispatch_{counter}_total{{provider="{provider}"}} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    # -- scenarios ---------------------------------------------------------------------------

    @contextmanager
    def scenario(self, title: str) -> Iterator[list[str]]:
        """Load flows while the block injects its fault (appending what it did to the list it
        gets); then the load stops, the loop drains and verify runs. Prints what was injected
        and verify's table; fails on any violation no earlier scenario reported."""
        assert self.load is not None
        injected: list[str] = []
        started, sent = time.monotonic(), self.load.sent
        self.load.resume()
        try:
            yield injected
        except BaseException as exc:
            self.load.pause()
            self.load.rate = self.steady
            self._report_broken(title, injected, exc)
            raise
        self.load.pause()
        self.load.rate = self.steady
        checks = self.drain()
        took = time.monotonic() - started
        new = violation_keys(checks) - self.known
        carried = len(violation_keys(checks) & self.known)
        self.known |= violation_keys(checks)
        text = table_text(checks, f"pushcascade verify after: {title}")
        lines = [f"=== fault scenario: {title} ({took:.0f} s, "
                 f"{self.load.sent - sent} requests) ===", *(f"  injected: {i}" for i in injected)]
        if self.load.unconfirmed:
            lines.append(f"  load: {len(self.load.unconfirmed)} flushes unconfirmed by the "
                         f"broker (re-sent by the producer): {self.load.unconfirmed[-1]}")
            self.load.unconfirmed.clear()
        if carried:
            lines.append(f"  ({carried} violation(s) carried over from earlier scenarios)")
        if new and self.stalled:  # which partitions stalled, and the workers' last words
            lines.append(f"  {self.stalled}")
        self.stalled = ""
        report = "\n".join(lines) + "\n" + text
        print(report)
        assert not new, f"{len(new)} new violation(s) after {title}:\n{report}"
        assert violations(checks) == carried, report

    def _report_broken(self, title: str, injected: list[str], exc: BaseException) -> None:
        """Print what a scenario that broke off had injected, why, and verify's table now
        (its recent items pending)."""
        from streams.verify import run

        print(f"=== fault scenario: {title}: broke off ({type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}) ===")
        for line in injected:
            print(f"  injected: {line}")
        try:
            checks = run(self.settings, settle=SETTLE, simulator_url=self.sim_url)
            print(table_text(checks, f"pushcascade verify (unsettled) after: {title}"))
        except Exception as failed:  # the loop may be too broken to be read
            print(f"  verify could not run: {failed!r}")

    def drain(self, timeout: float = 180.0) -> list[Check]:
        """Let every deadline of the last request come due, the simulator carry out the
        receipts and reads it scheduled and the workers commit everything; then verify, again
        until nothing is pending."""
        assert self.load is not None and self.loop.simulator is not None
        due = self.load.last_at + FIRST_TIMERS + SETTLE
        while time.time() < due:  # the deadlines themselves: nothing to await but the clock
            self.check()
            time.sleep(0.25)
        self.loop.simulator.idle(timeout)
        try:
            wait_idle(self.settings, IDLE_TIMEOUT, workers=self.workers())
        except TimeoutError as exc:  # a stalled partition: verify says what it left undone
            self.stalled = f"drain: the workers did not commit everything: {exc}"
            print(f"  {self.stalled.splitlines()[0]}")
        return run_settled(self.settings, timeout, settle=SETTLE, simulator_url=self.sim_url)

    def close(self) -> None:
        """Stop the load, SIGKILL every process by its pid (the loop is thrown away: nothing
        to flush), then the simulator."""
        if self.load is not None:
            self.load.close()
        for proc in self.loop.procs:
            proc.kill()
        self.loop.stop()


def settings_for(bootstrap: str, var_dir: Path, name: str) -> Settings:
    """Settings on their own topic prefix and chDB store, with the scenarios' deadlines (verify
    judges by them); topics created."""
    import uuid

    from streams.topics import create_topics

    settings = Settings(kafka_bootstrap_servers=bootstrap,
                        topic_prefix=f"t{uuid.uuid4().hex[:10]}.{name}.",
                        clickhouse_dsn=f"chdb://{var_dir / 'chdb'}", **TUNING)
    create_topics(settings, bootstrap)
    return settings


def kill_at_random_moments(stack: Stack, kind: str, kills: int, seed: str,
                           injected: list[str]) -> None:
    """SIGKILL a process of `kind` (a random one of them) `kills` times, each at a random moment
    0.3-3 s after it was ready, and restart it each time."""
    import random

    rng = random.Random(seed)
    for n in range(kills):
        victim = rng.choice(stack.of(kind))
        moment = rng.uniform(0.3, 3.0)
        time.sleep(moment)  # the random moment after it was ready: the fault itself
        pid = victim.proc.pid
        stack.kill(victim)
        began = time.monotonic()
        stack.restart(victim)
        injected.append(f"kill {n + 1}: SIGKILL {victim.name} (pid {pid}) {moment:.1f} s after "
                        f"it was ready; restarted, ready again in "
                        f"{time.monotonic() - began:.1f} s")


def started(broker: Any, var: Path, name: str) -> Stack:
    """A loop of two workers on its own topics and chDB store, the crowd registered."""
    return Stack(settings_for(broker.bootstrap, var, name), var, ACCOUNTS, RATE, workers=2,
                 provider_timeout=PROVIDER_TIMEOUT)
