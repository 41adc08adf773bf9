"""A repair head that hosts its region's key manager (``regions``), over the real transport.

``open_manager_head(announcement, credentials=...)`` is ``open_head`` for a head that a
``regions`` group names as a region's manager (the region table's ``manager`` is the head's
member id, which the access policy binds to its certificate).  It wires existing machines,
and decides nothing about security:

- it registers over TLS with the roles HEAD and MANAGER; the controller answers with a
  *manager state* as its key material (seat in the region's inner scheme, trunk membership,
  group key: see ``plugins/keymgmt_regions/manager.py``);
- its :class:`~rmsec.transport.RepairHead` delivers (a manager must hear the controller's
  rekey stream); messages of the rekey stream go to the member machine, which verifies the
  controller's signature and hands the payload to the manager; every other message (data it
  could decrypt, but has no business reading) is dropped unread;
- after every epoch change, the manager's translations (the group key under the region's
  key) go out on a **secondary sender stream** opened next to the head in the same process
  (:func:`rmsec.api.open_sender` on the group's transport announcement: a stream of its own,
  joined to the same tree, reliable, repaired like data).  Every member of the group hears
  it; each takes its own region's translation (:mod:`rmsec.security.regional`).

A translation that cannot be queued (the bounded queue is full) is dropped and counted: the
members of the region then recover their key from the controller, which is slower, not wrong.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import rmsec.api as api
from rmsec import transport
from rmsec.api import _run_node
from rmsec.io.base import Network, NodeSockets
from rmsec.io.driver import NodeDriver
from rmsec.secure_api import SecureHeadChannel, _member_node, _Security
from rmsec.security import events as sev
from rmsec.security import messages as msg
from rmsec.security import regional
from rmsec.transport import events as ev

__all__ = ["ManagerHeadChannel", "open_manager_head"]

#: Translations waiting for the secondary stream (one per epoch: a few are plenty).
TRANSLATION_QUEUE = 64


class ManagerHeadChannel(SecureHeadChannel):
    """A repair head hosting its region's manager; ``translations`` is its output stream."""

    def __init__(
        self, machine: Any, driver: NodeDriver, sockets: NodeSockets, security: _Security,
        translations: api.SenderChannel,
    ) -> None:
        super().__init__(machine, driver, sockets, security)
        self.translations = translations
        self.counters = {"translations_sent": 0, "translation_bytes": 0, "translations_dropped": 0}
        self._out, self._out_receive = trio.open_memory_channel[bytes](TRANSLATION_QUEUE)
        self._sent = trio.Event()
        security.listeners.append(self._on_security)

    @property
    def region(self) -> int | None:
        km = self.security.member.key_management
        region = getattr(km, "region", None)
        return region if isinstance(region, int) else None

    def stats(self) -> dict[str, int]:
        result = super().stats()
        result.update(self.counters)
        return result

    def _on_security(self, event: sev.SecurityEvent) -> None:
        if not isinstance(event, (sev.EpochChanged, sev.Welcomed)):
            return
        km = self.security.member.key_management
        if not isinstance(km, regional.TranslationSource):
            return
        for payload in km.translations_to_send():
            try:
                self._out.send_nowait(regional.encode_translation_frame(payload))
            except trio.WouldBlock:
                self.counters["translations_dropped"] += 1

    async def pump(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Rekey-stream messages to the member machine; the rest dropped unread."""
        task_status.started()
        security = self.security
        member = security.member
        rekeys = member.rekey_stream
        while True:
            try:
                event = await self._driver.events.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(event, ev.MessageReceived) and event.stream == rekeys:
                security.command(functools.partial(member.receive_rekey, event.data))

    async def forward(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Translations out on the secondary stream, in order."""
        task_status.started()
        self._on_security(sev.Welcomed(0, True))  # the welcome's own translation
        async for frame in self._out_receive:
            await self.translations.send(frame)
            self.counters["translations_sent"] += 1
            self.counters["translation_bytes"] += len(frame)
            self._sent.set()
            self._sent = trio.Event()

    async def wait_sent(self, count: int) -> None:
        """Return once ``count`` translations in all have gone to the stream."""
        while self.counters["translations_sent"] < count:
            await self._sent.wait()


def _keep_messages(event: ev.Event) -> bool:
    return isinstance(event, ev.MessageReceived)


@asynccontextmanager
async def open_manager_head(
    announcement: bytes, *, credentials: object, network: Network | None = None,
    host: str | None = None,
) -> AsyncIterator[ManagerHeadChannel]:
    """Open a repair head that hosts its region's key manager; returns once it is bound into
    the tree and its translation stream is open.  :class:`~rmsec.io.control.
    RegistrationRefused` if the group names no region managed by this head."""
    async with _member_node(
        announcement, credentials, msg.Roles.HEAD | msg.Roles.MANAGER, network, host, True
    ) as (security, ann, net, sockets, rng):
        machine = transport.RepairHead(
            ann.config, session=ann.session, node_id=security.member.node_id, rng=rng,
            now=trio.current_time(), bootstrap=ann.bootstrap, deliver=True,
        )
        async with api.open_sender(security.signed.transport, network=net, host=host) as tx:
            holder: list[ManagerHeadChannel] = []

            def factory(driver: NodeDriver) -> api._Node:
                holder.append(ManagerHeadChannel(machine, driver, sockets, security, tx))
                return holder[0]

            async def pump(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await holder[0].pump(task_status=task_status)

            async def forward(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await holder[0].forward(task_status=task_status)

            async with _run_node(
                factory, machine, sockets, keep=_keep_messages, ready=lambda n: n.bound_to is not None,
                last_words=getattr(machine, "leave", None),
                tasks=(security.run_link, pump, forward),
            ) as node:
                assert isinstance(node, ManagerHeadChannel)
                await security.catch_up()
                yield node
