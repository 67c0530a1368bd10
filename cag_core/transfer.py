"""Host -> device copies that do not stall the GPU.

Random numbers (MAE masks, view matrices) are drawn on the CPU so that a seed gives the same
images on every device. A plain `.to("cuda")` from pageable memory waits until the GPU has
finished all queued work, so two such copies per step meant the CPU could not queue step k+1
while the GPU ran step k. Pinned memory with `non_blocking=True` queues the copy instead; the
caching host allocator keeps the pinned block alive until the copy has run.
"""

from __future__ import annotations

import torch


def copy_source(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` as the source of a `non_blocking` copy to `device`: pinned when it goes from the
    CPU to CUDA (from pageable memory the copy would wait for the GPU)."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory()
    return tensor


def to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor.to(device, dtype)`; from the CPU to CUDA through pinned memory, without a sync."""
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return copy_source(tensor, device).to(device, non_blocking=True)
    return tensor.to(device)  # e.g. to the CPU: blocking, so the values are there when read
