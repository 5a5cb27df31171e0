"""Training losses as the reference computes them (docs/dpersona-model.md)."""
from __future__ import annotations

from typing import Iterable

import torch

DICE_SMOOTH = 1e-5  # keeps an empty foreground channel finite; negligible otherwise


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over channels of batch-level soft Dice 2*sum(p*t)/sum(p+t).

    probs, target: [N,H,W] (single channel: a background channel 1-p, 1-t is added) or [N,C,H,W].
    """
    if probs.shape != target.shape:
        raise ValueError(f"dice: prediction {tuple(probs.shape)} vs target {tuple(target.shape)}")
    if probs.dim() == 3:
        probs = torch.stack([1 - probs, probs], dim=1)
        target = torch.stack([1 - target, target], dim=1)
    dims = [0] + list(range(2, probs.dim()))
    inter = (probs * target).sum(dim=dims)
    total = (probs + target).sum(dim=dims)
    dice = (2 * inter + DICE_SMOOTH) / (total + DICE_SMOOTH)
    return 1 - dice.mean()


def kl_diag_gaussians(mu_q, log_sigma_q, mu_p, log_sigma_p) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over latent dims, mean over the batch."""
    var_q = torch.exp(2 * log_sigma_q)
    var_p = torch.exp(2 * log_sigma_p)
    kl = log_sigma_p - log_sigma_q + (var_q + (mu_q - mu_p) ** 2) / (2 * var_p) - 0.5
    return kl.sum(dim=1).mean()


def bound_loss(sample_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """sample_probs [N,S,H,W] of prior samples, masks [N,R,H,W]: the pixelwise max of the samples
    against the union of the raters, the pixelwise min against their intersection."""
    return bound_loss_from_extremes(sample_probs.max(dim=1).values,
                                    sample_probs.min(dim=1).values, masks)


def bound_loss_from_extremes(upper: torch.Tensor, lower: torch.Tensor,
                             masks: torch.Tensor) -> torch.Tensor:
    """`bound_loss` given the pixelwise max (upper) and min (lower) of the samples, [N,H,W]."""
    union = masks.max(dim=1).values
    inter = masks.min(dim=1).values
    return soft_dice_loss(upper, union) + soft_dice_loss(lower, inter)


def l2_norm_sum(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum of the (unsquared) L2 norms of the given tensors."""
    norms = [p.norm(2) for p in params]
    return torch.stack(norms).sum()
