"""The provider simulator: every vendor protocol on loopback, with a simulated population."""

from connectors.simulator.behaviour import Behaviour, Population
from connectors.simulator.core import Arrival, Simulator, SimulatorSettings
from connectors.simulator.server import SimulatorThread

__all__ = ["Arrival", "Behaviour", "Population", "Simulator", "SimulatorSettings",
           "SimulatorThread"]
