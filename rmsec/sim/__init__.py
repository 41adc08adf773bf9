"""Discrete-event simulator that drives the sans-IO transport machines at 10^4 and more nodes.

:mod:`~rmsec.sim.engine` moves datagrams and fires timers; :mod:`~rmsec.sim.network` models
delay and loss; :mod:`~rmsec.sim.wireinfo` classifies datagrams cheaply for the metrics;
:mod:`~rmsec.sim.topology` plans the repair tree; :mod:`~rmsec.sim.scenario` runs one group
end to end and measures it; :mod:`~rmsec.sim.cli` is ``rmsec sim``.  Unlike the machines it
drives, the simulator owns a clock and a seeded :class:`random.Random`.
"""
