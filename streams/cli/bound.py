"""`pushcascade bound`: the fewest sends a strategy could spend on a population for a reach of
98% of blast's, from an oracle that knows every account's habits (streams/harness/bound.py)."""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli import cli
from streams.cli.analytics import console
from streams.cli.demo import REACH_WINDOW, bound_table, reseeded
from streams.harness.bound import SHARE, bounds
from streams.harness.crowd import Crowd, PopulationError, shipped


@cli.command("bound")
@click.option("--population", "population_file", metavar="NAME|FILE", default=None,
              help=f"a shipped population ({', '.join(shipped())}) or a population file "
                   "[default: default]")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="average over K seeds of the population (the file's seed + 0..K-1)")
@click.option("--duration", default=140.0, show_default=True,
              help="seconds of load (where a change of mind falls)")
@click.option("--share", type=click.FloatRange(0.0, 1.0), default=SHARE, show_default=True,
              help="the share of blast's reach the oracle must match")
@click.option("--pushes", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="messages per account in the run (the demo's rate x duration / accounts): "
                   "also the learner's bound, each account's first push chosen knowing only "
                   "its channels and phones")
@click.option("--fanout", is_flag=True,
              help="the learner's first push to an account goes to every channel and phone at "
                   "once (as seed and adaptive send it), not the best one for its look")
def bound_command(population_file: str | None, seeds: int, duration: float,
                  share: float, pushes: float | None, fanout: bool) -> None:
    """The fewest sends per message a strategy could spend on a population for a reach
    within the demo's window of SHARE x blast's: an oracle that knows every account's habits
    (not each message's outcome), in the provider simulator's model; with --pushes, also the
    least a strategy that learns each account from its own pushes could spend. Nothing runs."""
    try:
        crowd = Crowd.load(population_file)
    except (PopulationError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if duration <= 0:
        raise click.BadParameter("must be > 0", param_hint="--duration")
    if fanout and pushes is None:
        raise click.BadParameter("needs --pushes (the learner's bound)", param_hint="--fanout")
    found = bounds(reseeded(crowd, seeds, None), REACH_WINDOW, duration, share, pushes, fanout)
    name = population_file or "default"
    console.print(bound_table(found, f"{Path(name).stem}: the oracle at {share:.0%} of blast's "
                                     f"reach within {REACH_WINDOW:g} s"
                                     + (f", means over {seeds} seeds" if seeds > 1 else "")
                                     + (", the learner's first push a fan-out" if fanout
                                        else "")))
