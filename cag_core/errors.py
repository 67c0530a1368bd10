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


class OutOfMemory(CaGError):
    """The device ran out of memory; the message names the batch size to try."""


class report_out_of_memory:  # noqa: N801 - used as a context manager, reads like one
    """Turn a device out-of-memory error into a message with a smaller batch to try.

    Frees the allocator's cached blocks so the server can take the next job. Usage:
        with report_out_of_memory(batch=16, size=(256, 256), device="cuda:0"):
            run(...)
    """

    def __init__(self, batch: int, size: tuple[int, int], device: object = "cuda"):
        self.batch, self.size, self.device = batch, size, device

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not _is_out_of_memory(exc):
            return False
        import gc
        import traceback

        import torch

        # The traceback keeps every frame of the failed step alive, and with them its activations:
        # drop their locals first (the error message needs none), so the memory can really be freed.
        traceback.clear_frames(tb)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        smaller = max(1, self.batch // 2)
        hint = f"try batch {smaller}" if self.batch > 1 else "try a smaller size, a smaller MAE, or autocast bf16"
        raise OutOfMemory(
            f"Out of memory on {self.device} generating batch {self.batch} at {self.size[1]}x{self.size[0]}: {hint}."
        ) from exc


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
