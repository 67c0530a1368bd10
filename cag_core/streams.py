"""Per-image random streams: every random number an image uses comes from its own generator.

An image's start noise, its MAE masks and its random views are drawn from a CPU `torch.Generator`
seeded from a *key* that names the image, e.g. `(seed, index)` for the nodes and the command line
or `(seed, class, k)` for a data set. So an image depends only on its key and the recipe: not on
the batch size, on which images share its batch, on how many processes split the work, or on a
restart. (Computing it must be batch-independent as well: the loss is a sum of per-image losses,
and on CPUs the classifier never runs a single view alone: `optimize._classify`.)

Each use of a key gets its own stream: `noise` for the start image, and one per optimize stage,
keyed by the stage's image size, so the stages of one image draw different views.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

Key = tuple  # ints and strings, e.g. (seed, index) or (seed, class, k)

NOISE = "noise"
OPTIMIZE = "optimize"


def stream_seed(key: Key) -> int:
    """A 63-bit seed from a key: stable across Python versions, platforms and runs (unlike
    `hash()`), and unrelated for neighbouring keys such as (seed, 0) and (seed, 1)."""
    if not isinstance(key, tuple) or not all(isinstance(part, (int, str)) for part in key):
        raise TypeError(f"A stream key is a tuple of ints and strings, got {key!r}.")
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8, person=b"cag-stream").digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ImageStreams:
    """One CPU generator per image of a batch, in batch order."""

    def __init__(self, keys: Sequence[Key]):
        self.keys = [tuple(k) for k in keys]
        if not self.keys:
            raise ValueError("ImageStreams needs at least one key.")
        self.generators = [torch.Generator().manual_seed(stream_seed(k)) for k in self.keys]

    @classmethod
    def for_batch(cls, seed: int, batch: int, purpose: Key = ()) -> "ImageStreams":
        """Streams keyed (seed, index, *purpose) for images 0..batch-1: image i of any batch is
        image i generated alone with the same seed."""
        return cls([(int(seed), i, *purpose) for i in range(batch)])

    @classmethod
    def derived(cls, image_keys: Sequence[Key], purpose: Key) -> "ImageStreams":
        """Streams for another use of the same images: keys (*image_key, *purpose)."""
        return cls([(*k, *purpose) for k in image_keys])

    def __len__(self) -> int:
        return len(self.generators)

    def rand(self, *shape: int) -> torch.Tensor:
        """[batch, *shape] uniform in [0, 1); row i from stream i."""
        return torch.stack([torch.rand(shape, generator=g) for g in self.generators])

    def randn(self, *shape: int) -> torch.Tensor:
        """[batch, *shape] standard normal; row i from stream i."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators])


def stage_purpose(height: int, width: int) -> Key:
    """The stream purpose of an optimize stage at this image size."""
    return (OPTIMIZE, int(height), int(width))
