"""A CPU stand-in for CUDA graph capture and replay, to test what the engine would capture.

A CUDA graph records the kernels of one call with the tensors (addresses) they touched, and a
replay runs exactly those kernels on exactly those tensors again: Python does not run, so every
value the host decided at capture time (a Python float, a tensor made from host data, a buffer
that is not refilled) is frozen into the graph. `EmulatedGraphRunner` does the same on the CPU
at the ATen level: it records every op of the captured step with its argument and output tensor
objects, and replays them in order, writing each fresh result into the recorded output tensor
(fixed "addresses"), re-running in-place ops as they are, and leaving view ops alone (the views
were recorded and still alias their bases). A step that depends on anything but its static input
buffers and its in-place-updated state then replays differently from the eager step.

The optimizer step is left out of the recording and run eagerly where it happened: on the CPU
torch's Adam reads its step count on the host; on CUDA the engine's Adam is fused and
capturable, PyTorch's own graph-safe path.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cag_core.step_graph import StepRunner


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list = []  # (func, args, kwargs, outputs) or ("optimizer", optimizer)
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.paused:
            self.ops.append((func, args, kwargs, out))
        return out


class EmulatedGraph:
    def __init__(self, ops: list):
        self.ops = ops
        self.ran_at_capture = True  # recording executed the step; a CUDA capture does not

    def replay(self) -> None:
        if self.ran_at_capture:
            self.ran_at_capture = False
            return
        with torch.no_grad():
            for op in self.ops:
                if op[0] == "optimizer":
                    op[1].step()
                    continue
                func, args, kwargs, recorded = op
                schema = func._schema
                result = func(*args, **kwargs)
                if schema.is_mutable or any(r.alias_info is not None for r in schema.returns):
                    continue  # in place (ran again on the same tensors) or a view (still aliases its base)
                fresh, _ = tree_flatten(result)
                fixed, _ = tree_flatten(recorded)
                for target, value in zip(fixed, fresh):
                    if isinstance(target, torch.Tensor):
                        target.copy_(value)


class EmulatedGraphRunner(StepRunner):
    """StepRunner with the CUDA capture path switched on and emulated on the CPU."""

    def __init__(self, step_fn, device, *, static, warmup=3):
        super().__init__(step_fn, device, static=static, warmup=warmup)
        self.capture = static
        self.captured = False

    def _on_side_stream(self, buffers):
        return self.step_fn(*buffers)

    def _capture(self, buffers) -> None:
        recorder = _Recorder()

        def pause(optimizer, *_):
            recorder.paused = True
            recorder.ops.append(("optimizer", optimizer))

        def resume(*_):
            recorder.paused = False

        hooks = [register_optimizer_step_pre_hook(pause), register_optimizer_step_post_hook(resume)]
        try:
            with recorder:
                outputs = self.step_fn(*buffers)
        finally:
            for hook in hooks:
                hook.remove()
        self.graph, self._outputs, self.captured = EmulatedGraph(recorder.ops), outputs, True
