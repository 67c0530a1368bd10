"""Run the optimize step from static input buffers, and on CUDA replay it as one captured graph.

A GPU step of MAE-Large + ResNet-50 launches about 1,450 kernels (forward, backward, Adam), and
measured on an H200 it took 40-70 ms at any batch up to 64: the GPU waited for the CPU to launch
the next kernel (benchmarks/README.md). A CUDA graph records the kernels of one step once and then
launches them all with one call, so the host cost per step no longer grows with the kernel count.

What a captured step needs, and how the engine gives it:
- Fixed addresses: the step reads its random numbers (MAE mask noise, view matrices) from buffers
  made once, refilled before every replay by copies from pinned memory (no sync); the parameters
  are updated in place by the optimizer; its outputs (images, loss) are the same tensors every
  step, so callers `keep()` what they hold on to past the next step.
- No host work inside: no `.item()`, no CPU->GPU copies, no Python decisions on values. The random
  numbers are drawn on the CPU before the step, as the eager step draws them, so a seed gives the
  same images either way.
- Warm-up: the first `warmup` steps run eagerly on a side stream (as PyTorch's whole-network
  capture recipe does), so cuDNN/cuBLAS/cuFFT set up their plans and Adam its state before capture.

On the CPU there is nothing to capture: the runner still uses its static buffers, so the code a
graph would replay is the code the CPU tests run. If capture fails (an operation that cannot be
captured, e.g. in a custom classifier), it says so in the log and runs the remaining steps eagerly.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from .transfer import copy_source, to_device

log = logging.getLogger(__name__)

StepFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (*inputs) -> (images, loss)


def captures(device: torch.device, static: bool) -> bool:
    """Whether a static StepRunner on `device` captures its step (CUDA only); the optimizer must
    then be capturable."""
    return static and device.type == "cuda"


class StepRunner:
    """Calls `step_fn(*inputs)` once per optimize step (it does zero_grad, forward, backward and
    the optimizer step). `static=True`: inputs go through fixed buffers; on CUDA, after `warmup`
    eager steps, one step is captured as a CUDA graph and replayed from then on."""

    def __init__(self, step_fn: StepFn, device: torch.device, *, static: bool, warmup: int = 3):
        self.step_fn = step_fn
        self.device = device
        self.static = static
        self.capture = captures(device, static)
        self.warmup = warmup
        self.calls = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self._buffers: Optional[list[Optional[torch.Tensor]]] = None
        self._outputs: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def replaying(self) -> bool:
        """True once the step runs as a graph: its outputs are then overwritten by the next step."""
        return self.graph is not None

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` (an output of this step) as a value that survives the next step."""
        return tensor.detach().clone() if self.replaying else tensor.detach()

    def __call__(self, *inputs: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        if not self.static:
            return self.step_fn(*(None if x is None else to_device(x, self.device) for x in inputs))
        buffers = self._fill(inputs)
        if self.graph is not None:
            self.graph.replay()
            return self._outputs  # type: ignore[return-value]
        if not self.capture:
            return self.step_fn(*buffers)
        if self.calls <= self.warmup:
            return self._on_side_stream(buffers)
        try:
            self._capture(buffers)
        except Exception as exc:  # an op that cannot be captured: finish the run eagerly
            log.warning("CUDA graph capture of the optimize step failed (%s: %s); running it without a graph.",
                        type(exc).__name__, exc)
            self.capture, self.graph, self._outputs = False, None, None
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return self.step_fn(*buffers)
        self.graph.replay()  # capturing only records: this step still has to run
        return self._outputs  # type: ignore[return-value]

    def close(self) -> None:
        """Free the graph and its memory pool now rather than at garbage collection."""
        self.graph, self._outputs, self._buffers = None, None, None

    def _fill(self, inputs) -> list[Optional[torch.Tensor]]:
        if self._buffers is None:
            self._buffers = [None if x is None else torch.empty_like(x, device=self.device) for x in inputs]
        if len(inputs) != len(self._buffers):
            raise ValueError(f"StepRunner got {len(inputs)} inputs, expected {len(self._buffers)}.")
        for buffer, x in zip(self._buffers, inputs):
            if (buffer is None) != (x is None) or (x is not None and x.shape != buffer.shape):
                raise ValueError("StepRunner inputs must keep their shapes (and presence) from step to step.")
            if x is not None:
                buffer.copy_(copy_source(x, self.device), non_blocking=True)
        return self._buffers

    def _on_side_stream(self, buffers):
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            outputs = self.step_fn(*buffers)
        current.wait_stream(side)
        return outputs

    def _capture(self, buffers) -> None:
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread of the host process (e.g. a ComfyUI preview) may touch CUDA.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = self.step_fn(*buffers)
        self.graph, self._outputs = graph, outputs

