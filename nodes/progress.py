"""Engine step callback -> ComfyUI progress bar, live preview, and the loss readout in the web UI.

The progress bar is updated every step because its hook is where ComfyUI raises when the user
presses Cancel: updating every step is what makes a run stop within one step. Previews cost a
device->host copy and a JPEG encode, so they are throttled in time; the loss readout goes out
with them.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from .images import preview_image

PREVIEW_MAX_SIDE = 512
PREVIEW_INTERVAL_S = 0.5
# Custom websocket event read by web/cag_progress.js.
PROGRESS_EVENT = "cag.progress"


def send_to_frontend(event: str, data: dict) -> bool:
    """Send a websocket event to the client that queued the prompt; False when not in a server."""
    try:
        from server import PromptServer
    except ImportError:  # tests, scripts: no ComfyUI server in this process
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None or not hasattr(instance, "send_sync"):
        return False
    instance.send_sync(event, data, getattr(instance, "client_id", None))
    return True


def _progress_bar(total: int, node_id: str | None):
    import comfy.utils

    try:
        return comfy.utils.ProgressBar(total, node_id=node_id)
    except TypeError:  # ComfyUI before node_id existed
        return comfy.utils.ProgressBar(total)


class OptimizeProgress:
    """Callable for `cag_core.optimize(callback=...)`; returns None so the engine never stops early."""

    def __init__(
        self,
        total: int,
        node_id: str | None = None,
        *,
        interval_s: float = PREVIEW_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.node_id = node_id
        self.interval_s = interval_s
        self.clock = clock
        self.bar = _progress_bar(total, node_id)
        self.losses: list[float] = []
        self._last_preview: float | None = None

    def _preview_due(self, step: int, total: int) -> bool:
        now = self.clock()
        # The first step, then every interval, and always the last step.
        if self._last_preview is None or step >= total or now - self._last_preview >= self.interval_s:
            self._last_preview = now
            return True
        return False

    def __call__(self, step: int, total: int, images: torch.Tensor, loss: float) -> None:
        self.losses.append(loss)
        preview = None
        if self._preview_due(step, total):
            preview = ("JPEG", preview_image(images), PREVIEW_MAX_SIDE)
            if self.node_id is not None:
                send_to_frontend(
                    PROGRESS_EVENT, {"node": str(self.node_id), "step": step, "total": total, "loss": loss}
                )
        self.bar.update_absolute(step, total, preview)
