"""Errors a user can act on.

Every error the engine raises for bad input or a bad file is a `CaGError` whose message is one
readable sentence naming the bad value, what was expected, and how to fix it. The nodes show the
message as it is; nothing here should need a traceback to be understood.
"""

from __future__ import annotations


class CaGError(ValueError):
    """Bad input or a bad model file: the message says what and how to fix it."""


class WeightsError(CaGError):
    """A weights file is missing, unsafe, corrupt, or does not fit the architecture."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf during optimization; the images are not returned."""


def describe_key_mismatch(missing: list[str], unexpected: list[str], limit: int = 6) -> str:
    """'missing keys: a, b, ... (12 in all); unexpected keys: c' for a state-dict mismatch."""

    def _few(keys: list[str]) -> str:
        shown = ", ".join(keys[:limit])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_few(unexpected)}")
    return "; ".join(parts) if parts else "no key mismatch"
