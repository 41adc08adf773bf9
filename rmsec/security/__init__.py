"""Security layer (sans-IO)."""
