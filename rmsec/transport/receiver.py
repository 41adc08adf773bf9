"""The receiver: binds to the best head, delivers each stream in order, exactly once."""

from __future__ import annotations

from collections.abc import Sequence

from rmsec.transport.config import TransportConfig
from rmsec.transport.node import Rng, TreeNode
from rmsec.wire.packets import Addr, Role


class Receiver(TreeNode):
    ROLE = Role.RECEIVER

    def __init__(
        self,
        config: TransportConfig,
        *,
        session: bytes,
        node_id: bytes,
        rng: Rng,
        now: float,
        bootstrap: Sequence[Addr] = (),
        parent: Addr | None = None,
        join_policy: str | None = None,
    ) -> None:
        super().__init__(
            config, session=session, node_id=node_id, rng=rng, now=now, bootstrap=bootstrap,
            parent=parent, accepts_children=False, delivers=True, join_policy=join_policy,
        )
        self.start(now)
