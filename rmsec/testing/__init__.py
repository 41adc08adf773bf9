"""Helpers for tests, the demo and the multi-process runner (not part of the stable API)."""
