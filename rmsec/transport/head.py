"""The repair head: caches a stream, repairs its children, aggregates their acknowledgements."""

from __future__ import annotations

from collections.abc import Sequence

from rmsec.transport.config import TransportConfig
from rmsec.transport.node import Rng, TreeNode
from rmsec.wire.packets import Addr, Role


class RepairHead(TreeNode):
    """A member that serves up to ``max_children`` others; it may also deliver to its own
    application (``deliver=True``).  It holds no keys: it caches and repairs ciphertext."""

    ROLE = Role.HEAD

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
        deliver: bool = False,
        join_policy: str | None = None,
    ) -> None:
        super().__init__(
            config, session=session, node_id=node_id, rng=rng, now=now, bootstrap=bootstrap,
            parent=parent, accepts_children=True, delivers=deliver, join_policy=join_policy,
        )
        self.start(now)
