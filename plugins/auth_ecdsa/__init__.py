"""Source authentication ``ecdsa-p256``: an ECDSA P-256 signature on every packet.

Same encodings as ``ed25519`` (the shared per-packet signature code lives in
``rmsec_plugins.auth_ed25519.persig``) with algorithm code 2.  It exists beside Ed25519
because this machine's OpenSSL verifies P-256 faster than Ed25519 (see docs/bench-auth.md);
its signatures are randomised (OpenSSL 3.0 has no RFC 6979 deterministic mode).
"""

from __future__ import annotations

from rmsec.hookspecs import hookimpl
from rmsec.registry import SourceAuthRegistry

from ..auth_ed25519.persig import PerPacketSignatureAuth


class EcdsaP256Auth(PerPacketSignatureAuth):
    """Every packet signed with ECDSA P-256 / SHA-256 (raw ``r || s``, 64 bytes)."""

    name = "ecdsa-p256"
    algorithm = "ecdsa-p256"


@hookimpl
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    registry.add(EcdsaP256Auth)
