"""Reading trained checkpoints back into an eval-mode model."""
from __future__ import annotations

import os
from typing import Tuple

import torch

from .config import TrainConfig
from .model import DPersona


def load_checkpoint(path: str) -> Tuple[TrainConfig, DPersona, int]:
    """(config, model in eval mode on CPU, stage) from a best.pt / last.pt written by the trainer."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a training checkpoint (needs 'model' and 'config')")
    cfg = TrainConfig.from_dict(state["config"])
    model = DPersona(cfg.model)
    model.load_state_dict(state["model"])
    model.eval()
    return cfg, model, int(state.get("stage", 1))
