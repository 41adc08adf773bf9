"""The public API's contract: readiness, end of iteration, misuse, lazy imports, the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import trio
import trio.testing

import rmsec
import rmsec.io
from rmsec.announcement import Announcement
from rmsec.errors import ChannelClosed, ConfigError
from rmsec.testing.group import background
from rmsec.transport import events
from rmsec.transport.config import TransportConfig


async def test_ready_means_bound_and_iteration_ends_with_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory(seed=1)
    async with rmsec.open_sender(network=net) as tx:
        ann = Announcement.decode_untrusted(tx.announcement)
        assert ann.root == tx.address and ann.network.kind == "memory"
        async with rmsec.open_receiver(tx.announcement, network=net) as rx:
            assert rx.bound_to == tx.address == rx.parent
            assert rx.events.of_type(events.Bound)
            for i in range(5):
                await tx.send(b"m%d" % i)
            await tx.aclose()
            got = [m async for m in rx]
            assert [m.data for m in got] == [b"m%d" % i for i in range(5)]
            assert all(m.sender == tx.stream and m.epoch == 0 for m in got)
            assert [m.seq for m in got] == sorted(m.seq for m in got)
            with pytest.raises(ChannelClosed):
                await rx.receive()
            assert rx.stats()["messages_delivered"] == 5
        with pytest.raises(ChannelClosed):
            await tx.send(b"late")
    assert tx.stats()["io_datagrams_out"] > 0


async def test_leaving_the_sender_block_waits_for_confirmation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory(seed=2, loss=0.1)
    async with trio.open_nursery() as nursery, background(nursery) as enter:
        received: list[bytes] = []
        async with rmsec.open_sender(network=net) as tx:
            rx = await enter(rmsec.open_receiver, tx.announcement, network=net)

            async def read() -> None:
                async for message in rx:
                    received.append(message.data)

            nursery.start_soon(read)
            for i in range(50):
                await tx.send(b"%d" % i)
        # Confirmation means the receiver holds everything (it may not have read it yet).
        assert tx.machine.confirmed
        assert tx.confirmed_stream == tx.stream


async def test_open_sender_does_not_return_before_it_can_be_joined(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory()
    async with (
        rmsec.open_sender(network=net) as tx,
        rmsec.open_head(tx.announcement, network=net) as head,
    ):
        assert head.bound_to == tx.address
        assert head.stats()["children"] == 0


async def test_misuse_is_reported_as_config_errors() -> None:
    mem = rmsec.io.memory()
    async with rmsec.open_sender(network=mem) as tx:
        with pytest.raises(ConfigError, match="memory"):
            async with rmsec.open_receiver(tx.announcement):
                pass  # pragma: no cover
        with pytest.raises(ConfigError, match="announcement says memory"):
            async with rmsec.open_receiver(tx.announcement, network=rmsec.io.udp()):
                pass  # pragma: no cover
        with pytest.raises(ConfigError):
            async with rmsec.open_receiver(tx.announcement, network=mem, join_policy="never"):  # type: ignore[arg-type]
                pass  # pragma: no cover
        await tx.aclose()
    with pytest.raises(ConfigError, match="multicast"):
        async with rmsec.open_sender(
            config=TransportConfig(multicast=True), network=rmsec.io.udp()
        ):
            pass  # pragma: no cover
    with pytest.raises(ConfigError, match="multicast"):
        async with rmsec.open_sender(
            config=TransportConfig(), network=rmsec.io.ip_multicast("239.255.0.1", 4000)
        ):
            pass  # pragma: no cover
    with pytest.raises(ConfigError, match="credentials"):
        async with rmsec.open_sender(network=mem, credentials=b"x"):
            pass  # pragma: no cover


async def test_garbage_datagrams_never_kill_a_node(autojump_clock: trio.testing.MockClock) -> None:
    net = rmsec.io.memory(seed=3)
    attacker = await net.open_node()
    async with (
        rmsec.open_sender(network=net) as tx,
        rmsec.open_receiver(tx.announcement, network=net) as rx,
    ):
        for junk in (b"", b"\xff" * 100, b"\x80", b"\x9f" * 5000):
            attacker.primary.send_nowait(junk, rx.address)
            attacker.primary.send_nowait(junk, tx.address)
        await tx.send(b"still fine")
        assert (await rx.receive()).data == b"still fine"
        assert rx.stats()["malformed"] == 4
        await tx.aclose()


def test_sans_io_imports_do_not_pull_in_trio() -> None:
    code = (
        "import sys, rmsec, rmsec.wire, rmsec.transport; "
        "print('trio' in sys.modules, 'socket' in sys.modules and 'rmsec.io' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert rmsec.open_sender is rmsec.api.open_sender
    assert set(rmsec.__all__) <= set(dir(rmsec))


def test_demo_json_on_memory(capsys: pytest.CaptureFixture[str]) -> None:
    from rmsec.demo import main

    assert (
        main(
            [
                "--json",
                "--quiet",
                "--receivers",
                "6",
                "--heads",
                "2",
                "--loss",
                "0.1",
                "--messages",
                "40",
                "--size",
                "300",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["all_identical"]
    assert len(report["receivers"]) == 6
    assert {r["sha256"] for r in report["receivers"]} == {report["sent"]["sha256"]}
    assert {r["count"] for r in report["receivers"]} == {40}


def test_demo_human_summary_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    from rmsec.cli import main

    assert main(["demo", "--receivers", "3", "--heads", "1", "--messages", "60"]) == 0
    captured = capsys.readouterr()
    assert "3/3 receivers identical" in captured.out
    assert "[demo]" in captured.err


async def test_errors_of_the_body_come_out_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = rmsec.io.memory()
    with pytest.raises(KeyError):
        async with rmsec.open_sender(network=net) as tx:
            raise KeyError("from the body")
    async with rmsec.open_sender(network=net) as tx:
        with pytest.raises(ValueError):
            async with rmsec.open_receiver(tx.announcement, network=net):
                raise ValueError("from the body")
        await tx.aclose()
