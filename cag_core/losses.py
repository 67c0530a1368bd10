"""The losses of one optimization step; each takes tensors the step already has.

Per-image losses return one value per image ([B]); the step minimizes their sum, so an image's
gradient is the gradient of its own loss, whatever else is in its batch. The diversity loss
compares the images of a batch by definition: with it on, an image depends on its batch-mates.

- `target_loss` (per image): soft-label cross-entropy toward the target mix, plus the probability
  of negatively weighted classes, averaged over the image's views.
- `diversity_loss`: the paper's "distance metric" loss, here the mean pairwise cosine similarity
  of the images' classifier features (lower = more different images in a batch).
- `BatchNormStats` (per image): the paper's "non-trivial distribution" prior, implemented as
  DeepInversion's batch-norm statistics matching (Yin et al., 2020), measured per image: the
  statistics of an image's views entering every BN layer should match that layer's running
  statistics from training.
- `total_variation` (per image): mean absolute difference between neighbouring pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm_folding import BN_REFERENCE
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


class _PixelMoments(torch.autograd.Function):
    """[N, P, C] -> [2, N, C]: per-channel mean and mean square over the P pixels, with a backward
    written as one fused pass (on 2 CPU cores 2.8x faster, forward + backward, than autograd through
    mean and square, which keeps the loss at a fraction of the classifier's own step)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.stack([x.mean(1), x.square().mean(1)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        pixels = x.shape[1]
        return torch.addcmul((grad[0] / pixels).unsqueeze(1), x, (grad[1] * (2 / pixels)).unsqueeze(1))


def _pixel_moments(x: torch.Tensor) -> torch.Tensor:
    """[2, N, C]: each of the N maps' per-channel mean and mean square over its pixels."""
    # Channels last, [N, pixels, C]: a view of a channels_last map (the CPU's fast path), where
    # reducing it was 2.7x faster than reducing (H, W) of the NCHW view; other layouts are copied.
    # Any map [N, C, ...] works, a BatchNorm1d's [N, C] as one pixel.
    x = x.float().movedim(1, -1)
    return _PixelMoments.apply(x.reshape(x.shape[0], -1, x.shape[-1]))


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None


class BatchNormStats:
    """Collects each image's BN-statistics distance during forwards; hooks live only inside `with`.

    An image's loss is the mean over BN layers of ||mean - running_mean||_2 + ||var - running_var||_2,
    where mean and var are per channel over that image's views and pixels at the layer's input. Each
    image is measured on its own (DeepInversion measures a whole batch), so an image does not
    depend on its batch-mates, and the loss runs in forwards of any number of whole images.

    `models` are the networks the step runs: originals (their BatchNorm layers are hooked) or
    BatchNorm-folded copies (batchnorm_folding.py; each folded convolution's output is mapped back
    to its BatchNorm's input through the `BN_REFERENCE` it keeps). A hook only stores a map's
    moments; `end_forward`, which the step calls after each forward, turns all layers' moments
    into distances in a few batched operations (per-layer operations were most of the cost on a
    CPU: EfficientNet-Lite0 has 49 BN layers). `take` is called once per step.

    `every` = n measures the loss only in steps 0, n, 2n, ... (counted by `take`), as n times the
    distance, so its mean push stays the same; in the other steps the hooks store nothing and
    `take` returns None, and the step pays nothing for the prior.
    """

    def __init__(self, models: list[nn.Module], views: int, every: int = 1):
        self.views = views
        self.every = every
        self._steps = 0  # `take` calls so far
        self._measuring = True  # whether this step's forwards are measured
        # (module, [4, C]: gain and offset from the hooked map to the BN input, running mean and
        # variance). A BatchNorm is hooked at its input (gain 1, offset 0), a folded convolution at
        # its output.
        self.layers: list[tuple[nn.Module, torch.Tensor]] = []
        for root in models:
            for m in root.modules():
                if _is_batchnorm(m):
                    mean, var = m.running_mean.detach().float(), m.running_var.detach().float()
                    self.layers.append((m, torch.stack([torch.ones_like(mean), torch.zeros_like(mean), mean, var])))
                elif isinstance(getattr(m, BN_REFERENCE, None), torch.Tensor):
                    self.layers.append((m, getattr(m, BN_REFERENCE)))
        self._handles: list = []
        self._moments: dict[int, torch.Tensor] = {}  # this forward's, per layer index
        self._images: list[torch.Tensor] = []  # the forwards' since `take`: [images] each
        self._references: dict[tuple, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def _hook(self, index: int, on_input: bool):
        def hook(_module, inputs, output):
            if self._measuring:
                self._moments[index] = _pixel_moments(inputs[0] if on_input else output)
        return hook

    def __enter__(self) -> "BatchNormStats":
        self._steps, self._measuring = 0, True
        self._handles = [m.register_forward_hook(self._hook(i, _is_batchnorm(m))) for i, (m, _) in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._moments = {}
        self._images = []

    def _reference(self, ran: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The references of the layers that ran, side by side ([4, sum C]), and each channel's layer."""
        key = (ran, str(device))
        if key not in self._references:
            refs = [self.layers[i][1].to(device) for i in ran]
            layer_of = torch.cat([torch.full((r.shape[1],), k, device=device) for k, r in enumerate(refs)])
            self._references[key] = (torch.cat(refs, dim=1), layer_of, len(refs))
        return self._references[key]

    def end_forward(self, keep: int | None = None) -> None:
        """Close one forward: its images' losses (the first `keep` of them) are kept for `take`."""
        if not self._moments:
            return
        ran = tuple(sorted(self._moments))
        moments = torch.cat([self._moments[i] for i in ran], dim=-1)  # [2, N, sum C]
        self._moments = {}
        (gain, offset, running_mean, running_var), layer_of, layers = self._reference(ran, moments.device)
        first, second = moments.unflatten(1, (moments.shape[1] // self.views, self.views)).mean(2)  # [images, sum C]
        mean = gain * first + offset
        var = gain * gain * (second - first * first).clamp(min=0)
        squares = torch.stack([(mean - running_mean).square(), (var - running_var).square()])  # [2, images, sum C]
        per_layer = squares.new_zeros(*squares.shape[:2], layers).index_add_(2, layer_of, squares)
        per_image = per_layer.sqrt().sum(0).mean(1)  # mean over layers of the two norms
        self._images.append(per_image if keep is None else per_image[:keep])

    def take(self, batch: int) -> torch.Tensor | None:
        """[batch]: each image's loss since the last call, averaged over the ensemble's members
        (each member ran the batch's forwards once); None if no BN layer ran or this step is not measured."""
        self.end_forward()
        self._steps += 1
        self._measuring = self._steps % self.every == 0
        if not self._images:
            return None
        per_image = torch.cat(self._images)
        self._images = []
        per_image = per_image.view(-1, batch).mean(0)
        return per_image * self.every if self.every > 1 else per_image
