"""Evaluation: the served function (DPersona.serve) on a data set, metrics per image, means."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from .data import MultiRaterSet, to_tensors
from .metrics import MetricAccumulator
from .model import DPersona


def make_noise(n: int, samples: int, bank_size: int, latent: int, generator: torch.Generator):
    eps_s = torch.randn(n, samples, latent, generator=generator)
    eps_b = torch.randn(n, bank_size, latent, generator=generator)
    return eps_s, eps_b


def model_memory_format(model: DPersona) -> torch.memory_format:
    """channels_last when the model's convolutions are (see `for_cpu_inference`)."""
    w = model.backbone.encoder.conv1.weight
    return torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) and \
        not w.is_contiguous() else torch.contiguous_format


def for_cpu_inference(model: DPersona, device: torch.device) -> DPersona:
    """On the CPU, channels-last tensors run the narrow convolutions of this model 2-3x faster
    (oneDNN's NCHW kernels for 8-16 channels are slow); same values within float rounding."""
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def evaluate_model(model: DPersona, ds: MultiRaterSet, samples: int, bank_size: int,
                   heads: bool = True, threshold: float = 0.5, seed: int = 1337,
                   device: Optional[torch.device] = None, batch_size: int = 16) -> Dict:
    """Masks in `ds` must already be in the model's rater order."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    acc = MetricAccumulator(ds.num_raters, threshold)
    L = model.cfg.latent_size
    fmt = model_memory_format(model)
    for i in range(0, len(ds), batch_size):
        img, _ = to_tensors(ds.images[i:i + batch_size], ds.masks[i:i + batch_size])
        img = img.contiguous(memory_format=fmt)
        raters = ds.masks[i:i + batch_size]
        eps_s, eps_b = make_noise(img.shape[0], samples, bank_size if heads else 1, L, gen)
        img = img.to(device)
        if heads:
            sp, rp = model.serve(img, eps_s.to(device), eps_b.to(device))
            rp = rp.cpu().numpy()
        else:
            sp = model.sample_probs(img, eps_s.to(device))
            rp = None
        sp = sp.cpu().numpy()
        for j in range(img.shape[0]):
            acc.update(raters[j], sp[j], None if rp is None else rp[j])
    model.train(was_training)
    return acc.result()
