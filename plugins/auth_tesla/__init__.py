"""Source authentication ``tesla``: RFC 4082 timed efficient stream loss-tolerant authentication.

The sender MACs each packet with the key of its time interval and discloses that key ``d``
intervals later; the keys form a one-way chain whose commitment is signed once (the
bootstrap), so a receiver checks a disclosed key with a few hashes and then every buffered
packet of its interval with one MAC.  Security rests on time: a receiver accepts a packet
only if, by its bound on the sender's clock, the packet's key cannot have been disclosed yet.
Receivers therefore need loose time synchronisation (:mod:`.clock`); one without it refuses.
In a secured group the core provides it (``needs_clock``): each receiver measures the
controller's clock over its TLS control connection and the controller measures the sender's
(:mod:`rmsec.security.clocks`), and the verifier gets the composed bound through
:meth:`TeslaVerifier.set_clock`; its width is the sum of both round trips, so
``max_sync_error`` (and ``rtt``) must cover them.  The core re-measures both legs every
:attr:`TeslaAuth.clock_refresh` seconds (``max_sync_error / (8 * drift)``, 250 s at the
defaults), so drift never widens a bound by more than ``5/16 max_sync_error``: round trips up
to about two thirds of ``max_sync_error`` keep a receiver verifying indefinitely.

Parameters (options, the same on both sides):

``interval`` (0.05 s)
    length of one interval ``T_int``;
``rtt`` (0.2 s)
    bound on the round-trip time between the sender and any receiver; the disclosure delay
    is ``d = ceil(2 * rtt / interval) + 1`` so a packet delayed by up to ``rtt`` at a receiver
    whose clock error is up to ``rtt`` still passes the safety condition
    (``(d - 1) * T_int >= delay + error``);
``max_sync_error`` (= ``rtt``)
    a receiver whose clock uncertainty (sync round trip + drift since) exceeds this refuses;
``drift`` (1e-4), ``chain_length`` (16384 intervals), ``key_len`` (16), ``mac_len`` (16),
``copies`` (3, repeats of each DISCLOSE and urgent bootstrap), ``max_buffer`` (8192 packets),
``hold`` (intervals a buffered packet waits beyond its disclosure time, ``4 d``),
``signature`` (``ed25519``), ``synchronized_clocks`` (False: set True only when the
receivers' ``now`` *is* the sender's clock, as in one process or the simulator).

Guarantee: every received packet that passes the safety condition is verified once any later
key of its chain arrives; only packets of the final ``d`` intervals of a burst can be lost, and
only if all ``copies`` of its DISCLOSE packet are lost (probability ``p ** copies``).
Encodings: :mod:`.wire`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rmsec.errors import ConfigError
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import Rng, SourceAuth
from rmsec.registry import SourceAuthRegistry
from rmsec.security import authcrypto

from ..auth_ed25519.persig import (
    check_options,
    check_sender_id,
    float_option,
    int_option,
)
from .clock import ClockSync
from .receiver import TeslaVerifier
from .sender import TeslaSigner
from .wire import Schedule

__all__ = ["ClockSync", "TeslaAuth", "TeslaSigner", "TeslaVerifier"]

_OPTIONS = {
    "interval", "rtt", "max_sync_error", "drift", "chain_length", "key_len", "mac_len",
    "copies", "max_buffer", "hold", "signature", "synchronized_clocks",
}


class TeslaAuth(SourceAuth):
    """RFC 4082 TESLA (see the module doc for options and guarantees)."""

    name = "tesla"
    non_repudiable = True  # receivers cannot forge; but TESLA is not a signature: no proof to third parties

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        check_options(self.options, _OPTIONS)
        o = self.options
        self.interval = float_option(o, "interval", 0.05, 1e-4, 3600.0)
        self.rtt = float_option(o, "rtt", 0.2, 0.0, 600.0)
        self.lag = math.ceil(2 * self.rtt / self.interval) + 1
        self.max_sync_error = float_option(o, "max_sync_error", self.rtt, 0.0, 600.0)
        self.drift = float_option(o, "drift", 1e-4, 0.0, 0.01)
        self.chain_length = int_option(o, "chain_length", 16384, 8, 1 << 24)
        if self.chain_length < 2 * self.lag + 2:
            raise ConfigError(
                f"tesla chain_length must be at least 2 * d + 2 = {2 * self.lag + 2} "
                f"(d = {self.lag} intervals from rtt and interval)"
            )
        self.key_len = int_option(o, "key_len", 16, 16, 32)
        self.mac_len = int_option(o, "mac_len", 16, 10, 32)
        self.copies = int_option(o, "copies", 3, 1, 16)
        self.max_buffer = int_option(o, "max_buffer", 8192, 1, 1 << 20)
        self.hold = int_option(o, "hold", 4 * self.lag, 0, 1 << 20)
        self.alg = authcrypto.signature_algorithm(o.get("signature", "ed25519"))
        shared = o.get("synchronized_clocks", False)
        if type(shared) is not bool:
            raise ConfigError("tesla synchronized_clocks must be true or false")
        self.synchronized_clocks = shared
        #: the core synchronises receivers through the controller (rmsec.security.clocks)
        self.needs_clock = not shared
        #: refresh the core's bound every max_sync_error / (8 drift) seconds (250 s at the
        #: defaults; 1..3600 s): drift then widens a bound by at most 2 drift * 1.25 period =
        #: 5/16 max_sync_error before it is re-measured, leaving the rest for round trips
        self.clock_refresh: float | None = None
        if self.needs_clock and self.drift > 0:
            self.clock_refresh = min(3600.0, max(1.0, self.max_sync_error / (8 * self.drift)))

    def signer(self, *, sender_id: bytes, now: float) -> TeslaSigner:
        schedule = Schedule(
            check_sender_id(sender_id), float(now), self.interval, self.lag, self.chain_length,
            self.key_len, self.mac_len,
        )
        return TeslaSigner(
            self.alg, self.alg.generate(self.rng), schedule, rng=self.rng, copies=self.copies
        )

    def verifier(
        self, params: bytes, material: bytes, *, now: float, sync: ClockSync | None = None
    ) -> TeslaVerifier:
        """A receiver.  ``sync`` is its bound on the sender's clock (see :mod:`.clock`);
        without one it refuses every packet until :meth:`TeslaVerifier.set_clock` (the core's
        loose synchronisation through the controller) or :meth:`TeslaVerifier.synchronise`,
        unless the ``synchronized_clocks`` option says ``now`` is the sender's clock."""
        if sync is None and self.synchronized_clocks:
            sync = ClockSync.shared_clock(now)
        return TeslaVerifier(
            params, material, sync=sync, max_sync_error=self.max_sync_error, drift=self.drift,
            max_buffer=self.max_buffer, hold=self.hold,
        )


@hookimpl
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    registry.add(TeslaAuth)
