"""Model and training configurations: `reference` (paper sizes), `lite` (CPU), `tiny` (tests).

A config is a plain dataclass so that the exact values used for a run can be written next to it
(config.json) and read back for resume, evaluation and export.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class ModelConfig:
    in_channels: int = 1
    num_raters: int = 4
    latent_size: int = 6
    image_size: int = 128
    # ResNet-34-shaped encoder: stem width, then (blocks, width) per stage.
    stem_width: int = 64
    stage_blocks: Tuple[int, ...] = (3, 4, 6, 3)
    stage_widths: Tuple[int, ...] = (64, 128, 256, 512)
    decoder_widths: Tuple[int, ...] = (256, 128, 64, 32, 16)
    # Prior / posterior nets: widths per level, convs per level.
    latent_net_widths: Tuple[int, ...] = (16, 32, 64, 128, 256)
    latent_net_convs: int = 3
    fcomb_width: int = 16
    fcomb_convs: int = 4
    head_widths: Tuple[int, ...] = (32, 16)  # the last level has width latent_size
    head_dropout: float = 0.1

    @property
    def feature_channels(self) -> int:
        return self.decoder_widths[-1]


@dataclass
class TrainConfig:
    name: str = "reference"
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 1337
    batch_size: int = 12
    lr: float = 1e-4
    epochs_stage1: int = 100
    epochs_stage2: int = 100
    # Optional cap on training images per epoch (randomly drawn each epoch); None = whole split.
    images_per_epoch: Optional[int] = None
    images_per_epoch_stage2: Optional[int] = None  # None = same as images_per_epoch
    kl_weight: float = 1.0
    bound_weight: float = 0.5
    bound_samples: int = 10
    l2_weight: float = 1e-5
    bank_size_train: int = 100
    # Validation during training (checkpoint selection on Dice_match).
    val_samples: int = 10
    val_bank_size: int = 100
    val_limit: Optional[int] = None  # evaluate only the first N validation images (None = all)
    # Serving defaults written to the bundle.
    default_samples: int = 10
    default_bank_size: int = 100
    threshold: float = 0.5
    # Documented deviations from the reference, as options.
    rater_order: str = "area"  # "area" (reference's LIDC choice) or "as-is"
    freeze_backbone_stage2: bool = True  # eval-mode backbone in stage II (reference: train mode)
    posterior_sample: bool = True  # stage I Dice on a posterior sample (the reference's later fix)
    encoder_weights: Optional[str] = None  # path to a state_dict for the encoder; None = from scratch
    # Translation augmentation: each training crop is shifted by up to this many pixels along each
    # axis (uniform, reflect padding, masks shifted with it). The LIDC crops are centred on the
    # nodule; a model trained on them alone segments only what sits at the centre (measured: the
    # default lite model found a nodule at 0.995 in a tile centred on it and at 0.000 with the tile
    # moved 16 px), which full-slice tiles with a stride of 96 px cannot guarantee. 48 = half the
    # stride. 0 = off (the reference).
    shift_augment: int = 0
    # Flips (left-right, up-down), rotations by multiples of 90 degrees, and a grey-value power
    # curve 255 (g/255)^y with |log y| <= gamma_augment (keeps 0 and 255, so the per-crop min-max
    # normalisation of the input holds); masks are transformed with their image. Off by default.
    flip_augment: bool = False
    rot90_augment: bool = False
    gamma_augment: float = 0.0
    num_workers: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        md = {k: (tuple(v) if isinstance(v, list) else v)
              for k, v in d.pop("model", {}).items() if k in model_fields}
        unknown = set(d) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return TrainConfig(model=ModelConfig(**md), **d)

    @staticmethod
    def load(path: str) -> "TrainConfig":
        with open(path) as f:
            return TrainConfig.from_dict(json.load(f))


def config_difference(a: dict, b: dict) -> str:
    """The fields in which two config dicts differ, after filling in defaults for fields that an
    older config file lacks: '' when they are the same config."""
    try:
        a, b = TrainConfig.from_dict(a).to_dict(), TrainConfig.from_dict(b).to_dict()
    except (TypeError, ValueError) as e:
        return f"unreadable config: {e}"
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key == "model":
            for mk in sorted(set(a[key]) | set(b[key])):
                if a[key].get(mk) != b[key].get(mk):
                    diffs.append(f"model.{mk}: {a[key].get(mk)!r} vs {b[key].get(mk)!r}")
        elif a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} vs {b.get(key)!r}")
    return "; ".join(diffs)


def reference() -> TrainConfig:
    return TrainConfig(name="reference")


def lite() -> TrainConfig:
    m = ModelConfig(stem_width=16, stage_widths=(16, 32, 64, 128),
                    decoder_widths=(64, 32, 16, 16, 8),
                    latent_net_widths=(8, 16, 32, 64, 128), fcomb_width=8, head_widths=(16, 8))
    # Sized for about an hour on 2 free CPU cores (stage I ~6 training images/s, stage II ~3.7,
    # measured with 2 threads at low load): 7 x 2400 images in stage I (1.4 passes over the LIDC
    # train split), 2 x 1200 in stage II. The learning rate is above the reference's 1e-4 because
    # the schedule is ~70x shorter.
    return TrainConfig(name="lite", model=m, lr=5e-4, epochs_stage1=7, epochs_stage2=2,
                       images_per_epoch=2400, images_per_epoch_stage2=1200, val_limit=300)


def tiny() -> TrainConfig:
    m = ModelConfig(stem_width=8, stage_blocks=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16),
                    decoder_widths=(16, 16, 8, 8, 8), latent_net_widths=(4, 8, 8, 16, 16),
                    latent_net_convs=2, fcomb_width=8, head_widths=(8, 8))
    return TrainConfig(name="tiny", model=m, batch_size=4, lr=1e-3, epochs_stage1=1,
                       epochs_stage2=1, images_per_epoch=32, val_limit=16, bank_size_train=20,
                       val_samples=4, val_bank_size=20, default_samples=4, default_bank_size=20)


CONFIGS = {"reference": reference, "lite": lite, "tiny": tiny}


def get_config(name_or_path: str) -> TrainConfig:
    if name_or_path in CONFIGS:
        return CONFIGS[name_or_path]()
    if name_or_path.endswith(".json"):
        return TrainConfig.load(name_or_path)
    raise ValueError(f"unknown config {name_or_path!r}: use one of {sorted(CONFIGS)} or a .json file")
