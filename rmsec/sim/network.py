"""The simulated network: per-node access delays, per-datagram random loss.

Each node sits behind an access link with its own one-way delay, drawn once when the node is
added; a datagram from ``a`` to ``b`` takes ``access[a] + access[b]``, plus optional
per-datagram jitter on unicast (multicast copies keep their fixed delays: the engine relies on
their arrival order, see :mod:`rmsec.sim.engine`).  With the default of no per-datagram jitter every path is FIFO, as most
real paths are, while paths still differ from each other (which is what lets a member find
its nearest head by RTT).  Loss is independent per delivered copy, so a multicast datagram can
reach some members and not others, the case repair trees exist for.
"""

from __future__ import annotations

import dataclasses

from rmsec.errors import ConfigError


@dataclasses.dataclass(frozen=True, slots=True)
class NetworkModel:
    """Delays in seconds; ``loss`` is the chance that one delivered copy is dropped.

    ``loss_control`` chooses whether control packets (acknowledgements, hellos, binds, ...)
    suffer the same loss as DATA; benchmarks keep it on, since real networks do not spare
    them.
    """

    delay_min: float = 0.001
    delay_max: float = 0.005
    jitter: float = 0.0
    loss: float = 0.0
    loss_control: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.delay_min <= self.delay_max:
            raise ConfigError("network delays must satisfy 0 <= delay_min <= delay_max")
        if self.jitter < 0:
            raise ConfigError("jitter must not be negative")
        if not 0 <= self.loss < 1:
            raise ConfigError(f"loss={self.loss} must be within [0, 1)")
