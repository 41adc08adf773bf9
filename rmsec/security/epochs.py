"""Epochs and their keys: the current epoch, the previous one for a grace period, nothing else.

Modelled on aioquic's key phases (``quic/crypto.py``): a pure object that holds what keys are
live and answers "which key opens a packet of epoch *e* now?".  Every membership change (or
batch, or period) gives a new epoch with a new group secret from the key-management scheme;
traffic keys derive from it per sender with HKDF (:func:`rmsec.security.aead.derive_traffic_key`)
and are cached for the life of the epoch.

Rules:

1. Epoch numbers only grow.  :meth:`EpochKeys.install` of an epoch not above the current one
   is refused: replaying an old group secret must never move a member backwards.
2. When epoch *e+k* is installed, *e* becomes *previous* and stays usable until
   ``now + grace`` (senders that have not yet heard the rekey keep using it for a moment);
   every older epoch is forgotten at once, which is what makes forward secrecy hold in
   practice: the secret is dropped, not merely unused.
3. A packet of a later epoch than the current one is *future*: the caller buffers it (bounded)
   until the rekey arrives.
"""

from __future__ import annotations

import enum

from rmsec.errors import LocalError
from rmsec.security.aead import AeadAlgorithm, PacketKey, derive_traffic_key

#: Largest epoch number a packet header carries (u32).
MAX_EPOCH = (1 << 32) - 1
#: Senders whose keys one epoch caches; beyond, the least recently added are re-derived.
KEY_CACHE = 4096


class EpochStatus(enum.Enum):
    CURRENT = "current"
    PREVIOUS = "previous"  # within its grace period
    FUTURE = "future"  # not installed yet: buffer
    STALE = "stale"  # older than we keep: drop
    NONE = "none"  # no epoch installed at all (before the welcome)


class EpochSecret:
    """One epoch's group secret and the traffic keys derived from it (cached per sender)."""

    __slots__ = ("_keys", "_secret", "algorithm", "epoch", "session")

    def __init__(self, algorithm: AeadAlgorithm, session: bytes, epoch: int, secret: bytes) -> None:
        self.algorithm = algorithm
        self.session = session
        self.epoch = epoch
        self._secret = secret
        self._keys: dict[bytes, PacketKey] = {}

    def key(self, sender_id: bytes) -> PacketKey:
        key = self._keys.get(sender_id)
        if key is None:
            if len(self._keys) >= KEY_CACHE:
                self._keys.pop(next(iter(self._keys)))
            key = derive_traffic_key(
                self.algorithm, self._secret, session=self.session, epoch=self.epoch,
                sender_id=sender_id,
            )
            self._keys[sender_id] = key
        return key


class EpochKeys:
    """The live epochs of one member (or of the controller's view of the group)."""

    def __init__(self, algorithm: AeadAlgorithm, session: bytes, *, grace: float) -> None:
        if grace < 0:
            raise LocalError("grace must not be negative")
        self.algorithm = algorithm
        self.session = session
        self.grace = grace
        self.current: EpochSecret | None = None
        self.previous: EpochSecret | None = None
        self.previous_until = 0.0

    @property
    def epoch(self) -> int | None:
        """The current epoch number (``None`` before the first install)."""
        return None if self.current is None else self.current.epoch

    def install(self, epoch: int, secret: bytes, now: float) -> None:
        """Make ``epoch`` current; the old current becomes previous for ``grace`` seconds."""
        if not 0 <= epoch <= MAX_EPOCH:
            raise LocalError(f"epoch {epoch} out of range")
        if self.current is not None and epoch <= self.current.epoch:
            raise LocalError(f"epoch {epoch} is not after the current {self.current.epoch}")
        self.previous = self.current
        self.previous_until = now + self.grace
        self.current = EpochSecret(self.algorithm, self.session, epoch, secret)

    def status(self, epoch: int, now: float) -> EpochStatus:
        current = self.current
        if current is None:
            return EpochStatus.NONE
        if epoch == current.epoch:
            return EpochStatus.CURRENT
        if epoch > current.epoch:
            return EpochStatus.FUTURE
        previous = self.previous
        if previous is not None and epoch == previous.epoch and now < self.previous_until:
            return EpochStatus.PREVIOUS
        return EpochStatus.STALE

    def key(self, epoch: int, sender_id: bytes, now: float) -> PacketKey | None:
        """The key that opens ``sender_id``'s packets of ``epoch`` now, if one is live."""
        status = self.status(epoch, now)
        if status is EpochStatus.CURRENT:
            assert self.current is not None
            return self.current.key(sender_id)
        if status is EpochStatus.PREVIOUS:
            assert self.previous is not None
            return self.previous.key(sender_id)
        return None

    def get_timer(self) -> float | None:
        """When the previous epoch's grace ends (so its secret can be dropped)."""
        return self.previous_until if self.previous is not None else None

    def handle_timer(self, now: float) -> None:
        if self.previous is not None and now >= self.previous_until:
            self.previous = None
