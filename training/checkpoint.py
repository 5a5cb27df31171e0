"""Reading trained checkpoints back: one reader for every command, so that a missing, truncated
or foreign file stops with the file and the problem named."""
from __future__ import annotations

import os
from typing import Iterable, Tuple

import torch

from .config import TrainConfig
from .model import DPersona


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def read_checkpoint(path: str, need: Iterable[str] = ("model", "config")) -> dict:
    """The dict saved by the trainer at `path`, with at least the keys in `need`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, bad pickle, wrong magic: torch raises several types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (a {type(state).__name__}, "
                              f"not a dict)")
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (lacks {missing}; has "
                              f"{sorted(state)[:8]})")
    return state


def load_weights(model: DPersona, state: dict, path: str) -> None:
    """state['model'] into model, or a CheckpointError that says the shapes do not fit."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).splitlines()
        raise CheckpointError(f"{path}: its weights do not fit this model config "
                              f"({'; '.join(line.strip() for line in first[:3])})") from e


def load_checkpoint(path: str) -> Tuple[TrainConfig, DPersona, int]:
    """(config, model in eval mode on CPU, stage) from a best.pt / last.pt written by the trainer."""
    state = read_checkpoint(path)
    try:
        cfg = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config in the checkpoint is not readable ({e})") from e
    model = DPersona(cfg.model)
    load_weights(model, state, path)
    model.eval()
    return cfg, model, int(state.get("stage", 1))
