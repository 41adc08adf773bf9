"""The registration service over real TLS on 127.0.0.1: cookie, certificates, denial, expel,
rekeys and recovery handed across, and a join flood that stays bounded."""

from __future__ import annotations

import os
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from rmsec.config import GroupConfig
from rmsec.credentials import ControllerCredentials, GroupCA, Identity
from rmsec.io.control import (
    ControlServer,
    MemberLink,
    RegistrationRefused,
    client_context,
    open_member_link,
    server_context,
)
from rmsec.security import events as ev
from rmsec.security import messages as msg
from rmsec.security.controller import Controller
from rmsec.security.member import Member, State

# tests/trio is not a package: make the repository root importable for the shared helpers
# (unnecessary under ``python -m pytest``, which puts the working directory on sys.path).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
import trio.lowlevel

from tests.unit.security_helpers import _Lookup, key_management_class

pytestmark = pytest.mark.udp  # real sockets on 127.0.0.1 (TCP here)


@pytest.fixture(scope="module")
def creds() -> ControllerCredentials:
    return ControllerCredentials.create("tls-test")


class Harness:
    def __init__(
        self, creds: ControllerCredentials, ca_file: pathlib.Path, **server_options: object
    ) -> None:
        self.creds = creds
        self.scheme = key_management_class()
        config = GroupConfig(
            group="tls-test",
            key_management=self.scheme.name,
            source_auth="ed25519",
            access_policy="x509",
            access_policy_options={"ca": str(ca_file)},
        )
        self.controller = Controller(
            config,
            signing_key=creds.signing_key(),
            rng=os.urandom,
            now=trio.current_time(),
            session=b"T" * 8,
            rekey_stream=1,
            wall_offset=time.time() - trio.current_time(),
            key_management=self.scheme(rng=os.urandom),
        )
        self.links: list[MemberLink] = []
        self.events: list[ev.SecurityEvent] = []
        self.server = ControlServer(
            self.controller,
            server_context(
                certificate=creds.identity.certificate,
                private_key=creds.identity.private_key,
                ca_certificate=creds.ca.certificate,
            ),
            on_rekey=self.multicast,
            on_event=self.events.append,
            **server_options,  # type: ignore[arg-type]
        )

    def multicast(self, envelope: bytes) -> None:
        """Stand-in for the rekey stream: hand the envelope to every live member."""
        for link in self.links:
            if link.member.state == State.MEMBER:
                link.command(lambda now, link=link: link.member.receive_rekey(envelope, now))

    def member(self, name: str, identity: Identity | None) -> tuple[Member, object]:
        member = Member(
            member_id=name.encode(),
            node_id=os.urandom(8),
            rng=os.urandom,
            now=trio.current_time(),
            roles=msg.Roles.RECEIVE | msg.Roles.SEND,
            controller_key=self.controller.public_key,
            plugins=_Lookup(self.scheme),
        )
        context = client_context(
            ca_certificate=self.creds.ca.certificate,
            certificate=identity.certificate if identity else None,
            private_key=identity.private_key if identity else None,
        )
        return member, context


@pytest.fixture()
async def harness(
    creds: ControllerCredentials, tmp_path: pathlib.Path
) -> AsyncIterator[Callable[..., object]]:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(creds.ca.certificate)
    async with trio.open_nursery() as nursery:
        started: list[Harness] = []

        async def make(**options: object) -> Harness:
            h = Harness(creds, ca_file, **options)
            await nursery.start(h.server.serve, "127.0.0.1", 0)
            started.append(h)
            return h

        yield make
        nursery.cancel_scope.cancel()


async def test_members_register_over_tls_and_follow_rekeys(
    harness: Callable[..., object], creds: ControllerCredentials
) -> None:
    h: Harness = await harness()  # type: ignore[misc]
    assert h.server.address is not None
    host, port = h.server.address
    with trio.fail_after(10):
        alice, ctx_a = h.member("alice", creds.ca.issue("alice"))
        async with open_member_link(alice, host, port, ctx_a) as link_a:  # type: ignore[arg-type]
            h.links.append(link_a)
            assert alice.state == State.MEMBER
            bob, ctx_b = h.member("bob", creds.ca.issue("bob"))
            async with open_member_link(bob, host, port, ctx_b) as link_b:  # type: ignore[arg-type]
                h.links.append(link_b)
                await link_a.wait_until(lambda: alice.epoch == bob.epoch)
                assert alice.epoch == h.controller.epoch
                sender = link_a.command(lambda now: alice.add_sender(stream=5, now=now))
                await link_b.wait_until(lambda: sender in bob.known_senders)
                frames = link_a.command(lambda now: alice.protect(sender, b"over tls", now))
                for frame in frames:
                    link_b.command(lambda now, f=frame: bob.receive_frame(f, now))
                delivered = []
                while (event := bob.next_event()) is not None:
                    if isinstance(event, ev.Delivered):
                        delivered.append(event.data)
                assert delivered == [b"over tls"]
            # bob left: alice moves to a new epoch without him
            await link_a.wait_until(
                lambda: alice.epoch == h.controller.epoch and h.controller.stats()["members"] == 1
            )
    joined = [e.member_id for e in h.events if isinstance(e, ev.MemberJoined)]
    assert joined == [b"alice", b"bob"]
    assert any(isinstance(e, ev.MemberLeft) and e.member_id == b"bob" for e in h.events)


async def test_denied_with_the_policys_reason(
    harness: Callable[..., object], creds: ControllerCredentials
) -> None:
    h: Harness = await harness()  # type: ignore[misc]
    host, port = h.server.address  # type: ignore[misc]
    with trio.fail_after(10):
        mallory, ctx = h.member("mallory", creds.ca.issue("alice"))  # someone else's certificate
        with pytest.raises(RegistrationRefused) as info:
            async with open_member_link(mallory, host, port, ctx):  # type: ignore[arg-type]
                pass
    assert (
        info.value.reason
        == "member id 'mallory' does not match the certificate's common name 'alice'"
    )
    assert mallory.state == State.DENIED


async def test_certificate_from_another_ca_fails_tls(
    harness: Callable[..., object], creds: ControllerCredentials
) -> None:
    h: Harness = await harness()  # type: ignore[misc]
    host, port = h.server.address  # type: ignore[misc]
    outsider = GroupCA.create("elsewhere").issue("alice")
    with trio.fail_after(10):
        member, ctx = h.member("alice", outsider)
        with pytest.raises((RegistrationRefused, trio.BrokenResourceError, OSError)):
            async with open_member_link(member, host, port, ctx):  # type: ignore[arg-type]
                pass
        await h.server.wait_until(
            lambda: h.server.counters["tls_failed"] >= 1 or h.server.pending == 0
        )
    assert h.controller.stats().get("registrations", 0) == 0


async def test_expel_closes_the_member_out(
    harness: Callable[..., object], creds: ControllerCredentials
) -> None:
    h: Harness = await harness()  # type: ignore[misc]
    host, port = h.server.address  # type: ignore[misc]
    with trio.fail_after(10):
        bob, ctx = h.member("bob", creds.ca.issue("bob"))
        async with open_member_link(bob, host, port, ctx) as link:  # type: ignore[arg-type]
            h.server.command(lambda now: h.controller.expel(b"bob", "certificate revoked", now))
            await link.wait_until(lambda: bob.state == State.EXPELLED)
    assert bob.reason == "certificate revoked"


async def test_join_flood_stays_bounded_and_a_member_still_joins(
    harness: Callable[..., object], creds: ControllerCredentials
) -> None:
    """300 bogus connections (idle, garbage, half-done cookies) against max_pending=32: the
    controller never tracks more than 32 unvetted connections, and alice still joins."""
    h: Harness = await harness(max_pending=32, handshake_timeout=2.0)  # type: ignore[misc]
    host, port = h.server.address  # type: ignore[misc]
    peak = 0
    streams: list[trio.SocketStream] = []

    async def flood() -> None:
        nonlocal peak
        for i in range(300):
            stream = await trio.open_tcp_stream(host, port)
            streams.append(stream)
            if i % 3 == 1:
                await stream.send_all(b"\x00\x00\x00\x05junk!")
            elif i % 3 == 2:
                await stream.send_all(msg.frame(b"\x83\x01\x01\x50" + b"n" * 16))  # a hello only
            peak = max(peak, h.server.pending)
            await trio.lowlevel.checkpoint()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.sleep(0.05)
            alice, ctx = h.member("alice", creds.ca.issue("alice"))
            async with open_member_link(alice, host, port, ctx):  # type: ignore[arg-type]
                assert alice.state == State.MEMBER
        peak = max(peak, h.server.pending)
    for stream in streams:
        await stream.aclose()
    assert peak <= 32
    assert h.server.counters["accepted"] >= 301
    assert h.server.counters["evicted"] + h.server.counters["cookie_failed"] >= 200
    assert h.controller.stats()["members"] == 0 and h.controller.stats()["admitted"] == 1
