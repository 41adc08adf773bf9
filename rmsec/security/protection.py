"""Packet protection: what a secured message looks like on a sender's stream, sealed and opened.

The transport moves opaque messages; each application message becomes one *frame*::

    header (28 bytes) || body || source-auth trailer

    header = version u8 (1) | kind u8 | flags u8 | aead code u8 | epoch u32
             | sender id (8 bytes) | sequence u64 | body length u32          (big-endian)

- kind ``DATA`` (1): ``body`` is the AEAD ciphertext and tag of the message with the header as
  associated data (flag ``ENCRYPTED``), or, when the sender switched encryption off for this
  message, ``plaintext || tag`` where the tag authenticates ``header || plaintext`` (the same
  AEAD with an empty message, i.e. GMAC for AES-GCM).  The trailer is the ``SourceAuth``
  signer's over ``header || body``: receivers verify it *before* they decrypt.
- kind ``AUTH`` (2): an extra source-authentication packet (``Signer.pending``: a batch
  signature, a TESLA key disclosure): ``body = data || tag`` under the group key, no trailer,
  so outsiders cannot feed a verifier.

The traffic key is the sender's key of the header's epoch (:mod:`rmsec.security.epochs`); the
nonce is the key's IV XOR the sequence number (:mod:`rmsec.security.aead`).  Sequence numbers
are per sender, start at 0 and run on across epochs, so one replay window per sender
(:mod:`rmsec.security.replay`) covers every epoch.

Order of checks on receipt (cheapest first, nothing decrypted before it is authentic):
parse → known sender? → fresh sequence? → source-auth verify (at arrival time) → epoch key
(current, previous in grace, or buffer if future) → AEAD open → mark sequence → deliver.
Every failure is counted, the frame dropped; nothing raises out of :meth:`Unprotector.receive`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import struct

from rmsec.errors import AuthenticationFailed, LocalError, MalformedPacket
from rmsec.interfaces import DeferredSigner, Signer, Verified, Verifier
from rmsec.security.aead import TAG_LEN
from rmsec.security.epochs import EpochKeys, EpochStatus
from rmsec.security.replay import DEFAULT_WINDOW, ReplayWindow

FRAME_VERSION = 1
HEADER = struct.Struct(">BBBBI8sQI")
HEADER_LEN = HEADER.size  # 28
SENDER_ID_LEN = 8
#: Largest frame accepted (the transport's default ``max_message`` plus room for trailers).
MAX_FRAME = 64 * 1024 * 1024 + 64 * 1024


class Kind:
    DATA = 1
    AUTH = 2


class Flags:
    ENCRYPTED = 0x01
    KNOWN = ENCRYPTED


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    kind: int
    flags: int
    aead: int
    epoch: int
    sender_id: bytes
    seq: int
    body_len: int

    def encode(self) -> bytes:
        return HEADER.pack(
            FRAME_VERSION, self.kind, self.flags, self.aead, self.epoch, self.sender_id, self.seq,
            self.body_len,
        )

    @classmethod
    def decode_untrusted(cls, frame: bytes) -> Header:
        """The header of ``frame``; :class:`MalformedPacket` unless every field is sane."""
        if not isinstance(frame, bytes) or not HEADER_LEN <= len(frame) <= MAX_FRAME:
            raise MalformedPacket("frame has a bad length")
        version, kind, flags, aead, epoch, sender_id, seq, body_len = HEADER.unpack_from(frame)
        if version != FRAME_VERSION:
            raise MalformedPacket("unknown frame version")
        if kind not in (Kind.DATA, Kind.AUTH) or flags & ~Flags.KNOWN:
            raise MalformedPacket("unknown frame kind or flags")
        if kind == Kind.AUTH and flags:
            raise MalformedPacket("authentication frames are never encrypted")
        if not TAG_LEN <= body_len <= len(frame) - HEADER_LEN:
            raise MalformedPacket("body length does not fit the frame")
        if kind == Kind.AUTH and body_len != len(frame) - HEADER_LEN:
            raise MalformedPacket("authentication frames carry no trailer")
        return cls(kind, flags, aead, epoch, sender_id, seq, body_len)


def peek_sender_untrusted(frame: bytes) -> bytes:
    """The sender id a frame claims (for routing only: nothing about it is checked yet)."""
    return Header.decode_untrusted(frame).sender_id


# ------------------------------------------------------------------------------------ sender


class StreamProtector:
    """Seals one sender's messages under the current epoch, then adds the source-auth trailer.

    ``keys`` is shared with the member that owns this sender, so a rekey the member applies is
    used from the next message on.

    Two ways to send.  :meth:`protect` returns the finished frame at once (with a
    :class:`~rmsec.interfaces.DeferredSigner` such as ``batchsig`` that costs a signature per
    frame).  :meth:`submit` seals the message and hands it to the signer; finished frames come
    out of :meth:`ready` (call it after each submit and once ``now`` reaches
    :meth:`get_timer`) and :meth:`flush` (end of stream), in sequence order, so a deferred
    signer signs once per batch and no frame waits past the signer's deadline.  For other
    signers :meth:`submit` finishes the frame at once and :meth:`ready` returns it.
    """

    def __init__(self, keys: EpochKeys, signer: Signer, sender_id: bytes, *, start_seq: int = 0) -> None:
        if len(sender_id) != SENDER_ID_LEN:
            raise LocalError(f"sender id must be {SENDER_ID_LEN} bytes")
        self.keys = keys
        self.signer = signer
        self.sender_id = sender_id
        self.next_seq = start_seq
        self.counters = collections.Counter[str]()
        self._deferred = signer if isinstance(signer, DeferredSigner) else None
        self._finished: list[bytes] = []  # frames from submit() not yet taken by ready()

    def _take_seq(self) -> tuple[int, int]:
        current = self.keys.current
        if current is None:
            raise LocalError("no epoch keys yet: wait for the welcome")
        seq = self.next_seq
        self.next_seq += 1
        return current.epoch, seq

    def protect(self, data: bytes, now: float, *, encrypt: bool = True) -> bytes:
        """One DATA frame carrying ``data``, its trailer made at once."""
        packet = self._seal(data, now, encrypt)
        return packet + self.signer.protect(packet, now)

    def submit(self, data: bytes, now: float, *, encrypt: bool = True) -> int:
        """Seal ``data`` as the next DATA frame; returns its sequence number.  The frame comes
        out of :meth:`ready` (at once unless the signer is deferred)."""
        packet = self._seal(data, now, encrypt)
        if self._deferred is None:
            self._finished.append(packet + self.signer.protect(packet, now))
        else:
            self._deferred.submit(packet, now)
        return self.next_seq - 1

    def ready(self, now: float) -> list[bytes]:
        """Submitted frames finished by ``now``, in sequence order."""
        if self._deferred is not None:
            self._finished.extend(p + t for p, t in self._deferred.ready(now))
        out, self._finished = self._finished, []
        return out

    def flush(self, now: float) -> list[bytes]:
        """Finish every submitted frame now (end of stream, sender removed)."""
        if self._deferred is not None:
            self._finished.extend(p + t for p, t in self._deferred.flush(now))
        out, self._finished = self._finished, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`ready` must next be called for a frame to leave in time (``-inf``:
        finished frames wait now); ``None`` when nothing submitted is held."""
        if self._finished:
            return -math.inf
        return None if self._deferred is None else self._deferred.get_timer()

    def _seal(self, data: bytes, now: float, encrypt: bool) -> bytes:
        """``header || body`` of the next DATA frame (sequence number taken)."""
        if len(data) > MAX_FRAME - HEADER_LEN - 64 * 1024:
            raise LocalError("message too large to protect")
        epoch, seq = self._take_seq()
        assert self.keys.current is not None
        key = self.keys.current.key(self.sender_id)
        code = self.keys.algorithm.code
        if encrypt:
            header = Header(Kind.DATA, Flags.ENCRYPTED, code, epoch, self.sender_id, seq,
                            len(data) + TAG_LEN).encode()
            body = key.seal(seq, data, header)
        else:
            header = Header(Kind.DATA, 0, code, epoch, self.sender_id, seq,
                            len(data) + TAG_LEN).encode()
            body = data + key.tag(seq, header + data)
        self.counters["protected"] += 1
        return header + body

    def pending(self, now: float) -> list[bytes]:
        """AUTH frames for the extra packets the signer has due by ``now``."""
        frames = []
        for extra in self.signer.pending(now):
            epoch, seq = self._take_seq()
            assert self.keys.current is not None
            key = self.keys.current.key(self.sender_id)
            header = Header(Kind.AUTH, 0, self.keys.algorithm.code, epoch, self.sender_id, seq,
                            len(extra) + TAG_LEN).encode()
            frames.append(header + extra + key.tag(seq, header + extra))
            self.counters["auth_frames"] += 1
        return frames


# ---------------------------------------------------------------------------------- receiver


@dataclasses.dataclass(frozen=True, slots=True)
class Opened:
    """A message that passed every check: who sent it, where, under which epoch."""

    sender_id: bytes
    seq: int
    epoch: int
    data: bytes
    encrypted: bool


@dataclasses.dataclass(slots=True)
class _Held:
    sender_id: bytes
    kind: int
    packet: bytes  # DATA: header || body (already source-verified); AUTH: the whole frame
    trailer: bytes
    arrival: float
    epoch: int


@dataclasses.dataclass(slots=True)
class _Sender:
    verifier: Verifier
    window: ReplayWindow


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a receiver holds for later (every one counts and drops beyond)."""

    replay_window: int = DEFAULT_WINDOW
    future_frames: int = 256
    future_bytes: int = 4 * 1024 * 1024
    future_timeout: float = 10.0
    max_epochs_ahead: int = 64
    unknown_frames: int = 1024
    unknown_bytes: int = 4 * 1024 * 1024
    unknown_timeout: float = 10.0
    senders: int = 4096


class Unprotector:
    """Opens frames from every known sender of a group (the receiving half of a member)."""

    def __init__(self, keys: EpochKeys, *, limits: Limits | None = None) -> None:
        self.keys = keys
        self.limits = limits or Limits()
        self.senders: dict[bytes, _Sender] = {}
        self._future: collections.deque[_Held] = collections.deque()
        self._future_bytes = 0
        self._unknown: collections.deque[_Held] = collections.deque()
        self._unknown_bytes = 0
        self.counters = collections.Counter[str]()

    # -- senders ---------------------------------------------------------------------------------

    def add_sender(self, sender_id: bytes, verifier: Verifier, now: float) -> list[Opened]:
        """Know ``sender_id`` from now on; returns what its buffered frames yield."""
        if sender_id not in self.senders and len(self.senders) >= self.limits.senders:
            raise LocalError("too many senders")
        previous = self.senders.get(sender_id)
        window = previous.window if previous else ReplayWindow(self.limits.replay_window)
        self.senders[sender_id] = _Sender(verifier, window)
        waiting = [h for h in self._unknown if h.sender_id == sender_id]
        if not waiting:
            return []
        self._unknown = collections.deque(h for h in self._unknown if h.sender_id != sender_id)
        self._unknown_bytes = sum(len(h.packet) + len(h.trailer) for h in self._unknown)
        out: list[Opened] = []
        for held in waiting:
            out.extend(self._receive(held.packet + held.trailer, held.arrival))
        return out

    def remove_sender(self, sender_id: bytes) -> None:
        self.senders.pop(sender_id, None)

    # -- frames ----------------------------------------------------------------------------------

    def receive(self, frame: bytes, now: float) -> list[Opened]:
        """Every message ``frame`` makes deliverable (maybe none, maybe several released)."""
        return self._receive(frame, now)

    def _receive(self, frame: bytes, arrival: float) -> list[Opened]:
        counters = self.counters
        try:
            header = Header.decode_untrusted(frame)
        except MalformedPacket:
            counters["malformed"] += 1
            return []
        if header.aead != self.keys.algorithm.code:
            counters["malformed"] += 1
            return []
        sender = self.senders.get(header.sender_id)
        if sender is None:
            self._hold_unknown(header, frame, arrival)
            return []
        if not sender.window.fresh(header.seq):
            counters["replayed"] += 1
            return []
        if header.kind == Kind.AUTH:
            return self._open(header, frame, b"", sender, arrival)
        end = HEADER_LEN + header.body_len
        packet, trailer = frame[:end], frame[end:]
        try:
            verified = sender.verifier.verify(packet, trailer, arrival)
        except AuthenticationFailed:
            counters["auth_failed"] += 1
            return []
        except MalformedPacket:
            counters["malformed"] += 1
            return []
        if len(verified) == 1 and verified[0].packet is packet:  # the common case: just this one
            return self._open(header, packet, verified[0].trailer, sender, arrival)
        return self._open_released(verified, header, sender, arrival)

    def _open_released(
        self, items: list[Verified], origin: Header, sender: _Sender, arrival: float
    ) -> list[Opened]:
        """Open what a verifier released, in sequence order: methods that verify late
        (signature packets, key disclosures) may release a batch in any order."""
        counters = self.counters
        ready: list[tuple[Header, Verified]] = []
        for item in items:
            try:
                header = Header.decode_untrusted(item.packet)
            except MalformedPacket:
                counters["malformed"] += 1
                continue
            if header.sender_id != origin.sender_id or header.kind != Kind.DATA:
                counters["malformed"] += 1
                continue
            ready.append((header, item))
        ready.sort(key=lambda pair: pair[0].seq)
        out: list[Opened] = []
        for header, item in ready:
            out.extend(self._open(header, item.packet, item.trailer, sender, arrival))
        return out

    def _open(self, header: Header, packet: bytes, trailer: bytes, sender: _Sender, arrival: float) -> list[Opened]:
        """Decrypt a source-verified DATA packet, or an AUTH frame; buffer it if its epoch is
        still to come."""
        counters = self.counters
        status = self.keys.status(header.epoch, arrival)
        if status is EpochStatus.FUTURE or status is EpochStatus.NONE:
            self._hold_future(header, packet, trailer, arrival)
            return []
        if status is EpochStatus.STALE:
            counters["stale_epoch"] += 1
            return []
        if not sender.window.fresh(header.seq):  # a release may duplicate an earlier arrival
            counters["replayed"] += 1
            return []
        key = self.keys.key(header.epoch, header.sender_id, arrival)
        assert key is not None
        head = packet[:HEADER_LEN]
        body = packet[HEADER_LEN : HEADER_LEN + header.body_len]
        try:
            if header.flags & Flags.ENCRYPTED:
                data = key.open(header.seq, body, head)
            else:
                data = body[:-TAG_LEN]
                key.check_tag(header.seq, body[-TAG_LEN:], head + data)
        except AuthenticationFailed:
            counters["aead_failed"] += 1
            return []
        if header.kind == Kind.AUTH:
            # AUTH frames are not marked in the replay window: every member holds the group
            # key, so an AEAD-valid AUTH frame may still be forged, and marking its seq would
            # let any member burn the sender's next sequence numbers.  What an AUTH frame
            # releases is source-verified DATA, checked for freshness in _open one by one.
            counters["auth_frames"] += 1
            try:
                released = sender.verifier.receive_auth_packet(data, arrival)
            except AuthenticationFailed:
                counters["auth_failed"] += 1
                return []
            except MalformedPacket:
                counters["malformed"] += 1
                return []
            return self._open_released(released, header, sender, arrival)
        sender.window.mark(header.seq)
        encrypted = bool(header.flags & Flags.ENCRYPTED)
        counters["delivered"] += 1
        if not encrypted:
            counters["delivered_plaintext"] += 1
        return [Opened(header.sender_id, header.seq, header.epoch, data, encrypted)]

    # -- buffers ---------------------------------------------------------------------------------

    def _hold_unknown(self, header: Header, frame: bytes, arrival: float) -> None:
        limits = self.limits
        self.counters["unknown_sender"] += 1
        if len(frame) > limits.unknown_bytes:
            self.counters["unknown_dropped"] += 1
            return
        self._unknown.append(_Held(header.sender_id, header.kind, frame, b"", arrival, header.epoch))
        self._unknown_bytes += len(frame)
        while len(self._unknown) > limits.unknown_frames or self._unknown_bytes > limits.unknown_bytes:
            dropped = self._unknown.popleft()
            self._unknown_bytes -= len(dropped.packet)
            self.counters["unknown_dropped"] += 1

    def _hold_future(self, header: Header, packet: bytes, trailer: bytes, arrival: float) -> None:
        limits = self.limits
        current = self.keys.epoch
        if current is not None and header.epoch > current + limits.max_epochs_ahead:
            self.counters["future_dropped"] += 1
            return
        size = len(packet) + len(trailer)
        if size > limits.future_bytes:
            self.counters["future_dropped"] += 1
            return
        self.counters["future_buffered"] += 1
        self._future.append(_Held(header.sender_id, header.kind, packet, trailer, arrival, header.epoch))
        self._future_bytes += size
        while len(self._future) > limits.future_frames or self._future_bytes > limits.future_bytes:
            dropped = self._future.popleft()
            self._future_bytes -= len(dropped.packet) + len(dropped.trailer)
            self.counters["future_dropped"] += 1

    @property
    def highest_future_epoch(self) -> int | None:
        """The latest epoch buffered frames wait for (a sign this member missed a rekey)."""
        return max((h.epoch for h in self._future), default=None)

    @property
    def buffered(self) -> int:
        return len(self._future) + len(self._unknown)

    def release(self, now: float) -> list[Opened]:
        """After a new epoch was installed: open every buffered frame that now can be."""
        current = self.keys.epoch
        if current is None or not self._future:
            return []
        ready = [h for h in self._future if h.epoch <= current]
        if not ready:
            return []
        self._future = collections.deque(h for h in self._future if h.epoch > current)
        self._future_bytes = sum(len(h.packet) + len(h.trailer) for h in self._future)
        out: list[Opened] = []
        for held in ready:
            sender = self.senders.get(held.sender_id)
            if sender is None:
                continue
            header = Header.decode_untrusted(held.packet)
            # Opened at the time of release: the epoch was future at arrival by definition.
            status = self.keys.status(held.epoch, now)
            if status is EpochStatus.STALE:
                self.counters["stale_epoch"] += 1
                continue
            out.extend(self._open(header, held.packet, held.trailer, sender, now))
        return out

    def get_timer(self) -> float | None:
        deadlines = []
        if self._future:
            deadlines.append(self._future[0].arrival + self.limits.future_timeout)
        if self._unknown:
            deadlines.append(self._unknown[0].arrival + self.limits.unknown_timeout)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        while self._future and self._future[0].arrival + self.limits.future_timeout <= now:
            dropped = self._future.popleft()
            self._future_bytes -= len(dropped.packet) + len(dropped.trailer)
            self.counters["future_expired"] += 1
        while self._unknown and self._unknown[0].arrival + self.limits.unknown_timeout <= now:
            dropped = self._unknown.popleft()
            self._unknown_bytes -= len(dropped.packet)
            self.counters["unknown_expired"] += 1

    # -- verifiers' own timers (TESLA: packets released by time, buffers expired) -------------

    def poll_timer(self) -> float | None:
        """The earliest :meth:`Verifier.get_timer` of the senders' verifiers."""
        deadlines = [t for s in self.senders.values() if (t := s.verifier.get_timer()) is not None]
        return min(deadlines, default=None)

    def poll(self, now: float) -> list[Opened]:
        """Poll every verifier that is due; open what they release."""
        out: list[Opened] = []
        for sender in list(self.senders.values()):
            due = sender.verifier.get_timer()
            if due is None or due > now:
                continue
            released = sender.verifier.poll(now)
            if released:
                try:
                    origin = Header.decode_untrusted(released[0].packet)
                except MalformedPacket:
                    self.counters["malformed"] += 1
                    continue
                out.extend(self._open_released(released, origin, sender, now))
        return out
