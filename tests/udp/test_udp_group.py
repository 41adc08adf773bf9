"""A group over real UDP sockets on 127.0.0.1 with receive-side loss."""

from __future__ import annotations

import pytest
import trio

import rmsec.io
from rmsec.testing.group import run_group, tree_config

pytestmark = pytest.mark.udp


async def test_20_receivers_2_heads_10_percent_loss_10_mb() -> None:
    net = rmsec.io.udp(loss=0.1, seed=1)
    # Twenty-three nodes share one Python process here, so a receiver can fall behind for
    # reasons that have nothing to do with the network; this test is about reliability under
    # loss, so the group waits for it ("block") instead of pruning it (the memory-net tests
    # cover the prune policy).
    config = tree_config(20, 2, slow_receiver="block")
    with trio.fail_after(120):
        result = await run_group(
            net, receivers=20, heads=2, messages=1000, size=10_000, seed=2, config=config
        )
    assert result.sent_count * 10_000 == 10_000_000
    for d in result.deliveries:
        assert (d.count, d.sha256, d.in_order) == (1000, result.sent_sha256, True), d
    assert result.sender_stats["io_dropped_loss"] > 0
