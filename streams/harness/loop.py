"""The closed loop, supervised: stream workers, dispatcher, ack gateway and sink as child
processes, and the provider simulator (in this process) playing a population.

`Loop` starts them on one topic prefix and ClickHouse DSN and always stops them (an error, a
child that died, Ctrl-C); `check()` raises when a child has exited. `pushcascade up`, `demo` and
the pipeline benchmark run the same loop.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from connectors.serving import free_port
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from streams.harness.processes import Process, start_python, start_worker, worker_env
from streams.settings import Settings

#: A message counts as reached when it is read within this many seconds of its request: the
#: demo profile's three read deadlines of 3 s and a second to spare. adaptive plans for it.
REACH_WINDOW = 10.0
#: The demo profile: deadlines short enough that escalations, fallbacks and probes happen
#: within a run of a few minutes.
DEMO_TUNING: dict[str, Any] = {
    "new_account_pushes": 2, "read_deadline_low": 3, "read_deadline_normal": 3,
    "read_deadline_high": 3, "read_deadline_urgent": 3, "receipt_deadline": 2,
    "probe_count_first": 3, "probe_count_again": 3, "probe_device_per_hour": 720,
    "probe_global_per_second": 20, "probe_timeout": 2, "probe_interval": 600,
    "route_half_life": 10}
DEMO_TUNING["read_window"] = REACH_WINDOW / DEMO_TUNING["read_deadline_normal"]
#: The demo's sink recomputes the fleet's route priors this often, from all its sends, each
#: weighing 1/2 per route half-life of its age, per model over at least this many sends.
DEMO_PRIORS: dict[str, Any] = {
    "priors_interval": 5, "priors_window": 0,
    "priors_half_life": DEMO_TUNING["route_half_life"], "priors_min_samples": 20}
#: After the last push, every timer it can start has come due by then: its read deadlines
#: (a ladder of up to three) and the receipt deadline of an APP send an escalation may make.
LAST_TIMER = 3 * DEMO_TUNING["read_deadline_high"] + DEMO_TUNING["receipt_deadline"]


class Loop:
    """The pipeline's services on `settings`, answered by a simulator playing `population`,
    tuned by `profile` (the demo's by default; {} keeps the environment's) and `tuning`."""

    def __init__(self, settings: Settings, var_dir: Path, name: str,
                 population: dict[str, Any] | None = None, workers: int = 1,
                 seed: int = 7, profile: dict[str, Any] | None = None, **tuning: Any) -> None:
        self.settings, self.var_dir, self.name = settings, var_dir, name
        self.population, self.workers, self.seed = population, workers, seed
        self.tuning = {**(DEMO_TUNING if profile is None else profile), **tuning}
        self.procs: list[Process] = []
        self.simulator: SimulatorThread | None = None
        self.ports = {n: free_port() for n in ("gateway", "worker", "dispatch", "sink", "sql")}

    def __enter__(self) -> Loop:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def gateway_url(self) -> str:
        """Where the ack gateway answers (callbacks and read links)."""
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def env(self) -> dict[str, str]:
        """The services' environment."""
        assert self.simulator is not None
        return {**worker_env(self.settings, **self.tuning, gateway_port=self.ports["gateway"],
                             dispatch_metrics_port=self.ports["dispatch"],
                             sink_metrics_port=self.ports["sink"], sql_port=self.ports["sql"],
                             sink_flush_interval=0.5, **DEMO_PRIORS,
                             # the simulator plays every person and vendor from one address
                             gateway_client_rate=1e9),
                "CLICKHOUSE_DSN": self.settings.connections.dsn,
                "PUSHCASCADE_GATEWAY_URL": self.gateway_url,
                "PUSHCASCADE_PROVIDER_SIMULATOR_URL": self.simulator.url}

    def start(self) -> None:
        """The simulator, then sink, gateway, dispatcher and the stream workers."""
        options: dict[str, Any] = {"port": 0, "seed": self.seed, "gateway_url": self.gateway_url}
        sim = Simulator(SimulatorSettings(**options))
        if self.population is not None:
            sim.set_population(self.population)
        self.simulator = SimulatorThread(sim).start()
        env, run = self.env(), self.var_dir
        for command in ("sink", "acks-gateway", "dispatch"):
            self.procs.append(start_python("streams.cli", command, env=env, workdir=run,
                                           name=f"{self.name}-{command}"))
        for i in range(self.workers):
            port = self.ports["worker"] if i == 0 else free_port()
            self.procs.append(start_worker({**env, "PUSHCASCADE_METRICS_PORT": str(port)}, run,
                                           f"{self.name}-worker{i}"))

    def set_population(self, document: dict[str, Any]) -> None:
        """Replace what the simulated people and phones do (times are absolute)."""
        assert self.simulator is not None
        self.simulator.sim.set_population(document)

    def check(self) -> None:
        """Raise ProcessExited (with its log) when a service has exited."""
        for proc in self.procs:
            proc.check()

    def stop(self) -> None:
        """Stop every service (workers first), then the simulator."""
        for proc in reversed(self.procs):
            proc.stop(8)
        self.procs = []
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
