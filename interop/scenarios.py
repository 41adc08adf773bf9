"""What the matrix runs on every combination: small frozen scenario definitions.

Each scenario gets a fresh :class:`~.group.SecureGroup` (controller, head, sender; no
receiving member yet) and drives it through the public API.  It passes by returning (a short
note for the report) and fails by raising :class:`~.group.ScenarioFailed` with a message that
names the member and what it saw.  Every wait is bounded by ``wait`` seconds and the whole run
by ``timeout`` (the matrix wraps it in ``trio.fail_after``), so a combination that hangs is
reported as failed, not waited for.

- ``churn``: members join and leave across rounds while the sender streams (one stream,
  open throughout; every change a new epoch); every member must read exactly the messages
  sent while it was a member, once, in order.
- ``recovery``: a member is cut off the data plane for a second while the group rekeys and the
  sender goes on; it asks for key recovery over its control connection (DESIGN.md §4), must be
  at the controller's epoch while still cut off, and once back reads what it missed (repaired
  by the transport) and follows the next rekey.
- ``forgery``: where the source-auth method claims source authentication
  (``non_repudiable``), an insider that may send forges a message as the sender (valid AEAD:
  it holds the group key; a trailer from the same method under its own keys, plus its extra
  authentication packets); no member may deliver it, and the real messages around it must
  still arrive.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

import trio

from rmsec.interfaces import SourceAuth

from .group import Combination, ScenarioFailed, SecureGroup


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario(abc.ABC):
    """One scenario; fields are its parameters (all small: a run takes a few seconds)."""

    name: ClassVar[str]
    #: Senders besides the group's sender that the scenario needs, opened with the group.
    others: ClassVar[tuple[str, ...]] = ()
    #: Seconds the whole run (set-up, scenario, tear-down) may take.
    timeout: float = 30.0
    #: Seconds each wait for the group may take (delivery, epoch, membership count).
    wait: float = 10.0
    #: Seconds to wait for what the transport repairs or a late verification releases; then
    #: the exact check says what is missing (a loss is reported, not waited out for ``wait``).
    repair_wait: float = 3.0
    #: Messages sent per round.
    per_round: int = 3

    def skip_reason(self, combination: Combination, auth: type[SourceAuth]) -> str | None:
        """Why the scenario does not apply to ``combination`` (``None``: it does)."""
        return None

    @abc.abstractmethod
    async def run(self, group: SecureGroup, members: int) -> str:
        """Drive ``group`` with ``members`` receiving members; return a note for the report."""


@dataclasses.dataclass(frozen=True, slots=True)
class Churn(Scenario):
    name: ClassVar[str] = "churn"
    rounds: int = 3
    #: Members leaving, and as many joining, between rounds.
    churn: int = 1

    async def run(self, group: SecureGroup, members: int) -> str:
        await group.join(members)
        for r in range(self.rounds):
            if r:
                group.leave(group.live[: self.churn])
                await group.join(self.churn)
            await group.settle()
            await group.send(self.per_round)
            await group.delivered()
        group.check_exact()
        return f"{len(group.members)} members over {self.rounds} rounds, epoch {group.controller.epoch}"


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery(Scenario):
    name: ClassVar[str] = "recovery"
    #: Seconds the member stays cut off at least (a short outage, as on a real network).
    outage: float = 1.0

    async def run(self, group: SecureGroup, members: int) -> str:
        views = await group.join(members)
        await group.settle()
        await group.send(self.per_round)
        await group.delivered()
        lost = views[0]
        group.isolate(lost)
        cut = trio.current_time()
        newcomer = (await group.join(1))[0]  # a rekey the cut-off member cannot hear
        await group.settle()
        await group.send(self.per_round)  # read by the others meanwhile, repaired to it later
        before = lost.rx.epoch
        recovered: int | None = None
        with trio.move_on_after(self.wait):
            recovered = await lost.rx.request_recovery()
        epoch = group.controller.epoch
        if lost.rx.epoch != epoch:
            raise ScenarioFailed(
                f"{lost.name} asked for key recovery at epoch {before} while cut off; it holds "
                f"epoch {lost.rx.epoch} (answer: {recovered}), the controller is at {epoch}"
            )
        await trio.sleep_until(cut + self.outage)
        group.rejoin(lost)
        outage = trio.current_time() - cut
        await group.delivered(repair=True)  # repaired by the transport
        group.check_exact()
        group.leave([newcomer])  # and it follows the next rekey from the tree again
        await group.settle()
        await group.send(self.per_round)
        await group.delivered()
        group.check_exact()
        applied = lost.rx.stats().get("sec_recoveries_applied", 0)
        return (f"{lost.name} cut off for {outage:.2f} s recovered epoch {before} -> {epoch} "
                f"({applied} recoveries applied)")


@dataclasses.dataclass(frozen=True, slots=True)
class Forgery(Scenario):
    name: ClassVar[str] = "forgery"
    others: ClassVar[tuple[str, ...]] = ("mallory",)
    #: Seconds the forger keeps sending its signer's extra packets (TESLA key disclosures,
    #: EMSS signature packets) before the sender goes on: long enough for a method that
    #: verifies late to release an accepted forgery.
    grace: float = 1.0

    def skip_reason(self, combination: Combination, auth: type[SourceAuth]) -> str | None:
        if not auth.non_repudiable:
            return (f"{combination.source_auth} does not claim source authentication "
                    "(non_repudiable = False): any member can sign as the sender")
        return None

    async def run(self, group: SecureGroup, members: int) -> str:
        await group.join(members)
        mallory = group.other("mallory")
        await group.settle()
        await group.send(self.per_round)
        await group.delivered()
        assert group.sender is not None
        forged = group.forge(mallory, group.sender)
        with trio.move_on_after(self.grace):
            while True:
                await trio.sleep(0.05)
                group.forge_pending(mallory, forged)
        await group.send(self.per_round)  # the real messages the forgery claimed to be
        await group.delivered(repair=True)
        group.check_exact()
        failures = sum(v.rx.stats().get("auth_failures", 0) for v in group.live)
        return f"forgery rejected ({failures} authentication failures counted by members)"


#: Every scenario, in the order the matrix runs them.
SCENARIOS: tuple[Scenario, ...] = (Churn(), Recovery(), Forgery())


def by_name(names: list[str] | None = None) -> list[Scenario]:
    """The scenarios called ``names`` (all when ``None``), in the matrix's order."""
    known = {s.name: s for s in SCENARIOS}
    if names is None:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown scenario(s) {unknown}; known: {sorted(known)}")
    return [s for s in SCENARIOS if s.name in names]
