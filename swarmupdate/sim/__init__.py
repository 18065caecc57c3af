"""A discrete-event simulator of a fleet downloading one release, each agent running the real core.

::

    engine.py   event queue (heapq) and the flow-level network model
    fleet.py    agents, origin, tracker, adversaries; SimConfig, Simulator, simulate()
    result.py   SimResult and the Kumar-Ross lower bound
    __main__.py python -m swarmupdate.sim --agents N --size-mb S --up-mbit U --origin-up-mbit O

Pure: simulated time only, randomness from the seed in SimConfig.
"""

from swarmupdate.sim.fleet import MBIT, MIB, SimConfig, Simulator, simulate
from swarmupdate.sim.result import SimResult, kumar_ross_bound

__all__ = ["MBIT", "MIB", "SimConfig", "SimResult", "Simulator", "kumar_ross_bound", "simulate"]
