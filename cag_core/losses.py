"""The losses of one optimization step; each takes tensors the step already has.

Per-image losses return one value per image ([B]); the step minimizes their sum, so an image's
gradient is the gradient of its own loss, whatever else is in its batch. The diversity and
BN-statistics losses compare the images of a batch by definition: with them on, an image depends
on its batch-mates.

- `target_loss` (per image): soft-label cross-entropy toward the target mix, plus the probability
  of negatively weighted classes, averaged over the image's views.
- `diversity_loss`: the paper's "distance metric" loss, here the mean pairwise cosine similarity
  of the images' classifier features (lower = more different images in a batch).
- `BatchNormStats`: the paper's "non-trivial distribution" prior, implemented as DeepInversion's
  batch-norm statistics matching (Yin et al., 2020): the batch statistics entering every BN layer
  should match that layer's running statistics from training.
- `total_variation` (per image): mean absolute difference between neighbouring pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .targets import Target


def target_loss(logits: torch.Tensor, target: Target, views: int, floor: float = 0.0) -> torch.Tensor:
    """[B]: each image's loss, the mean over its views; logits [B * views, C], image i's views in
    rows i*views .. (i+1)*views-1.

    floor: a view whose cross-entropy is already below this counts as `floor`, with no gradient
    (a view that convinces stops pulling; 0 = never, today's loss)."""
    logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)
    positive = target.positive.repeat_interleave(views, dim=0)
    loss = -(positive * log_probs).sum(-1)
    if floor > 0:
        loss = loss.clamp(min=floor)
    if target.has_negative:
        negative = target.negative.repeat_interleave(views, dim=0)
        loss = loss + (negative * log_probs.exp()).sum(-1)
    return loss.view(-1, views).mean(1)


def diversity_loss(features: torch.Tensor, batch: int, views: int) -> torch.Tensor:
    """Mean cosine similarity between different images' (view-averaged) features."""
    if batch < 2:
        return features.new_zeros(())
    per_image = features.float().reshape(batch, views, -1).mean(1)
    per_image = F.normalize(per_image, dim=-1)
    similarity = per_image @ per_image.T
    off_diagonal = similarity.sum() - similarity.diagonal().sum()
    return off_diagonal / (batch * (batch - 1))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """[B] for images [B, C, H, W]."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


class BatchNormStats:
    """Collects the BN-statistics distance during forwards; hooks live only inside `with`.

    The loss is the mean over BN layers of ||mean - running_mean||_2 + ||var - running_var||_2,
    measured on the batch entering each layer (all views of all images together).
    """

    def __init__(self, modules: list[nn.Module]):
        self.layers = [m for root in modules for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._handles: list = []
        self._terms: list[torch.Tensor] = []

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], _output) -> None:
        x = inputs[0].float()
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        self._terms.append(
            torch.linalg.vector_norm(mean - module.running_mean) + torch.linalg.vector_norm(var - module.running_var)
        )

    def __enter__(self) -> "BatchNormStats":
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._terms = []

    def take(self) -> torch.Tensor | None:
        """The loss of the forwards since the last call (None if no BN layer ran)."""
        if not self._terms:
            return None
        loss = torch.stack(self._terms).mean()
        self._terms = []
        return loss
