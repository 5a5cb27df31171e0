"""Stage I and stage II training loops: seeded, resumable, with validation-based selection.

Run directory layout (everything a run needs to be understood later):
  RUN/config.json                 the exact TrainConfig
  RUN/stage{1,2}/last.pt          model + optimiser + scheduler + RNG state, for --resume
  RUN/stage{1,2}/best.pt          the weights with the best validation Dice_match so far
  RUN/stage{1,2}/metrics.json     per-epoch training losses and validation metrics, and the best
  RUN/stage{1,2}/curves.png       loss and metric curves
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from . import losses
from .config import TrainConfig, config_difference
from .checkpoint import load_weights, read_checkpoint
from .data import (MultiRaterSet, augment_crops, check_training_masks, order_raters,
                   shift_crops, to_tensors)
from .evaluate import evaluate_model
from .model import DPersona, load_encoder_weights


class TrainingError(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: Optional[str]) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def atomic_torch_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plain_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """state_dict with contiguous (NCHW) tensors, whatever memory format training used."""
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine annealing from base_lr to 0 over the whole run (stepped per iteration)."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


def _progress(iterable, total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, disable=not enabled, dynamic_ncols=True,
                    mininterval=2.0, file=sys.stderr)
    except ImportError:  # tqdm is optional
        return iterable


def save_curves(history: List[Dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    # the raw L2 norm sum (hundreds, weighted by 1e-5 in the loss) would flatten the other curves
    loss_keys = [k for k in history[0]["train"].keys() if k != "l2"] if history else []
    for k in loss_keys:
        axes[0].plot(epochs, [h["train"][k] for h in history], marker="o", label=k)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("training loss (epoch mean)")
    axes[0].legend(fontsize=8)
    metric_keys = [k for k in ("ged", "dice_soft", "dice_max", "dice_match", "heads_dice_match",
                               "personalised_dice") if history and k in history[0].get("val", {})]
    for k in metric_keys:
        axes[1].plot(epochs, [h["val"][k] for h in history], marker="o", label=k)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str, train_set: MultiRaterSet,
                 val_set: MultiRaterSet, device: Optional[str] = None, progress: bool = True,
                 log=print, fast: bool = True, checkpoint_every: int = 50):
        R = cfg.model.num_raters
        for name, ds in (("training", train_set), ("validation", val_set)):
            if ds.num_raters != R:
                raise TrainingError(f"{ds.source}: {name} data has {ds.num_raters} raters but config "
                                    f"{cfg.name!r} expects {R} (set model.num_raters)")
            if ds.images.shape[1] != cfg.model.in_channels:
                raise TrainingError(f"{ds.source}: {name} images have {ds.images.shape[1]} channels,"
                                    f" config expects {cfg.model.in_channels}")
            size = cfg.model.image_size
            if ds.images.shape[2:] != (size, size):
                raise TrainingError(f"{ds.source}: {name} images are {ds.images.shape[2:]}, config "
                                    f"expects {size}x{size}")
        for role, ds in (("training", train_set), ("validation", val_set)):
            for note in check_training_masks(ds, role):
                log(note)
        if cfg.val_samples < R:
            raise TrainingError(f"val_samples {cfg.val_samples} < {R} raters: checkpoint selection "
                                f"on Dice_match needs at least one sample per rater")
        self.cfg = cfg
        self.run_dir = run_dir
        self.device = pick_device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed 128x128 shapes: let cuDNN pick kernels
        self.progress = progress
        self.log = log
        # fast: the same losses and gradients computed for CPU speed (channels-last tensors, the
        # bound loss decoding only the extreme sample per pixel); False: the direct formulation,
        # kept for the equality test and the before/after benchmark.
        self.fast = fast
        # Steps between mid-epoch checkpoints (RUN/stageN/last.pt); 0: only at the end of epochs.
        self.checkpoint_every = checkpoint_every
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        self.train_images = train_set.images
        self.train_masks = order_raters(train_set.masks, cfg.rater_order)
        self.val_set = MultiRaterSet(val_set.images, order_raters(val_set.masks, cfg.rater_order),
                                     val_set.ids, val_set.source)
        os.makedirs(run_dir, exist_ok=True)
        cfg_path = os.path.join(run_dir, "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                saved = json.load(f)
            diff = config_difference(saved, cfg.to_dict())
            if diff:
                raise TrainingError(f"{cfg_path} holds a different config ({diff}); use a new "
                                    f"--out directory or the same config")
        else:
            atomic_write_text(cfg_path, cfg.to_json())

    # ------------------------------------------------------------------ helpers
    def _stage_dir(self, stage: int) -> str:
        d = os.path.join(self.run_dir, f"stage{stage}")
        os.makedirs(d, exist_ok=True)
        return d

    def _epoch_cap(self, stage: int) -> Optional[int]:
        if stage == 2 and self.cfg.images_per_epoch_stage2 is not None:
            return self.cfg.images_per_epoch_stage2
        return self.cfg.images_per_epoch

    def _epoch_order(self, rng: np.random.RandomState, stage: int) -> np.ndarray:
        """The images of one epoch, in order: a fresh permutation, capped at the epoch size."""
        n = len(self.train_images)
        order = rng.permutation(n)
        cap = self._epoch_cap(stage)
        if cap is not None:
            order = order[: min(n, cap)]
        return order

    def _batches(self, rng: np.random.RandomState, stage: int = 1,
                 order: Optional[np.ndarray] = None, start_batch: int = 0):
        """Batches of one epoch from batch `start_batch` on (a resumed epoch), augmented: each
        batch's random draws are made when it is produced, after the previous step."""
        if order is None:
            order = self._epoch_order(rng, stage)
        bs = self.cfg.batch_size
        cfg = self.cfg
        starts = range(0, len(order) - bs + 1 if len(order) >= bs else 1, bs)
        for i in list(starts)[start_batch:]:
            idx = np.sort(order[i:i + bs])
            images, masks = shift_crops(self.train_images[idx], self.train_masks[idx],
                                        cfg.shift_augment, rng)
            images, masks = augment_crops(images, masks, cfg.flip_augment, cfg.rot90_augment,
                                          cfg.gamma_augment, rng)
            img, msk = to_tensors(images, masks)
            yield (img.to(self.device, memory_format=self.memory_format),
                   msk.to(self.device, memory_format=self.memory_format))

    def _steps_per_epoch(self, stage: int) -> int:
        n = len(self.train_images)
        cap = self._epoch_cap(stage)
        if cap is not None:
            n = min(n, cap)
        return max(1, n // self.cfg.batch_size)

    # ------------------------------------------------------------------ the loop
    def train(self, stage: int, resume: bool = False, init_checkpoint: Optional[str] = None,
              epochs: Optional[int] = None, reschedule: bool = False) -> Dict:
        """reschedule: with resume, accept an epoch count other than the checkpoint's and
        continue the cosine learning-rate schedule over the new total from the current step
        (to shorten or extend a run deliberately)."""
        cfg = self.cfg
        if stage not in (1, 2):
            raise TrainingError(f"stage must be 1 or 2, got {stage}")
        total_epochs = epochs if epochs is not None else (
            cfg.epochs_stage1 if stage == 1 else cfg.epochs_stage2)
        sdir = self._stage_dir(stage)
        seed_everything(cfg.seed + stage)
        model = self.prepare_model(DPersona(cfg.model))
        if stage == 1:
            if init_checkpoint:
                # Fine-tuning: every stage-I weight starts from an earlier run's checkpoint.
                if not os.path.isfile(init_checkpoint):
                    raise TrainingError(f"--init checkpoint {init_checkpoint} not found")
                load_weights(model, read_checkpoint(init_checkpoint), init_checkpoint)
            elif cfg.encoder_weights:
                load_encoder_weights(model, cfg.encoder_weights)
            params = [p for m in model.stage1_modules() for p in m.parameters()]
        else:
            src = init_checkpoint or os.path.join(self.run_dir, "stage1", "best.pt")
            if not os.path.isfile(src):
                raise TrainingError(f"stage II needs a stage I checkpoint: {src} not found "
                                    f"(train --stage 1 first or pass --init)")
            load_weights(model, read_checkpoint(src), src)
            for m in model.stage1_modules():
                for p in m.parameters():
                    p.requires_grad_(False)
            params = list(model.heads.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        steps_per_epoch = self._steps_per_epoch(stage)
        total_steps = steps_per_epoch * total_epochs
        rng = np.random.RandomState(cfg.seed + 100 * stage)
        history: List[Dict] = []
        best = {"epoch": None, "score": -1.0}
        start_epoch, step = 0, 0
        partial = None  # the state of an epoch interrupted after a mid-epoch checkpoint
        last_path = os.path.join(sdir, "last.pt")
        if resume:
            if not os.path.isfile(last_path):
                raise TrainingError(f"--resume: no checkpoint at {last_path}")
            ck = read_checkpoint(last_path, need=("model", "config", "optimizer", "epoch", "step",
                                                  "history", "best", "numpy_rng", "torch_rng"))
            self._check_resume(ck, last_path, stage, None if reschedule else total_epochs)
            if ck["epoch"] > total_epochs:
                raise TrainingError(f"{last_path}: already {ck['epoch']} epochs, more than "
                                    f"--epochs {total_epochs}")
            load_weights(model, ck, last_path)
            optimizer.load_state_dict(ck["optimizer"])
            start_epoch, step, history, best = ck["epoch"], ck["step"], ck["history"], ck["best"]
            rng.set_state(ck["numpy_rng"])
            torch.set_rng_state(ck["torch_rng"])
            partial = ck.get("partial_epoch")
            where = f"epoch {start_epoch + 1}, batch {partial['batch']}" if partial else \
                f"the end of epoch {start_epoch}"
            self.log(f"resumed stage {stage} at {where} (step {step}) from {last_path}")
        select_key = "dice_match" if stage == 1 else "heads_dice_match"

        def save_last(epoch_done: int, partial_epoch: Optional[Dict]) -> None:
            atomic_torch_save({"model": plain_state_dict(model), "optimizer": optimizer.state_dict(),
                               "epoch": epoch_done, "step": step, "history": history,
                               "best": best, "numpy_rng": rng.get_state(),
                               "torch_rng": torch.get_rng_state(), "config": cfg.to_dict(),
                               "stage": stage, "total_epochs": total_epochs,
                               "partial_epoch": partial_epoch}, last_path)

        for epoch in range(start_epoch, total_epochs):
            self._set_modes(model, stage)
            if partial is not None:
                order, first_batch = np.asarray(partial["order"]), partial["batch"]
                sums, count, seconds = dict(partial["sums"]), partial["count"], partial["seconds"]
                partial = None
            else:
                order, first_batch = self._epoch_order(rng, stage), 0
                sums, count, seconds = {}, 0, 0.0
            t0 = time.time()
            bar = _progress(self._batches(rng, stage, order, first_batch),
                            steps_per_epoch - first_batch,
                            f"stage {stage} epoch {epoch + 1}/{total_epochs}", self.progress)
            for img, msk in bar:
                lr = cosine_lr(cfg.lr, step, total_steps)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                parts = self._stage1_loss(model, img, msk, rng) if stage == 1 else \
                    self._stage2_loss(model, img, msk)
                loss = parts["loss"]
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"stage {stage}: non-finite loss at epoch {epoch + 1}, step {step} "
                        f"({ {k: float(v) for k, v in parts.items()} }); lower the learning rate "
                        f"or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                count += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{sums['loss'] / count:.4f}", lr=f"{lr:.2e}")
                if self.checkpoint_every and count % self.checkpoint_every == 0 \
                        and count < steps_per_epoch:
                    # A stopped process loses at most checkpoint_every steps.
                    save_last(epoch, {"order": order, "batch": count, "sums": sums,
                                      "count": count, "seconds": seconds + time.time() - t0})
            train_time = seconds + time.time() - t0
            val = self.validate(model, stage)
            entry = {"epoch": epoch + 1, "step": step, "train_seconds": round(train_time, 1),
                     "images_per_second": round(count * cfg.batch_size / max(train_time, 1e-9), 2),
                     "train": {k: v / max(count, 1) for k, v in sums.items()}, "val": val}
            history.append(entry)
            score = val.get(select_key, -1.0)
            if score > best["score"]:
                best = {"epoch": epoch + 1, "score": score, "key": select_key, "val": val}
                atomic_torch_save({"model": plain_state_dict(model), "config": cfg.to_dict(),
                                   "stage": stage, "epoch": epoch + 1, "val": val},
                                  os.path.join(sdir, "best.pt"))
            save_last(epoch + 1, None)
            atomic_write_text(os.path.join(sdir, "metrics.json"), json.dumps(
                {"stage": stage, "config": cfg.name, "history": history, "best": best}, indent=2))
            save_curves(history, os.path.join(sdir, "curves.png"), f"{cfg.name} stage {stage}")
            self.log(f"stage {stage} epoch {epoch + 1}/{total_epochs}: loss "
                     f"{entry['train']['loss']:.4f}, {entry['images_per_second']} img/s, val "
                     + ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float)))
        return {"history": history, "best": best}

    def _check_resume(self, ck: Dict, path: str, stage: int,
                      total_epochs: Optional[int]) -> None:
        """A resumed run must continue the run that wrote the checkpoint: same config, same stage,
        same schedule (the cosine learning rate depends on the total number of steps)."""
        if int(ck.get("stage", stage)) != stage:
            raise TrainingError(f"{path}: written by stage {ck.get('stage')}, not stage {stage}")
        diff = config_difference(ck["config"], self.cfg.to_dict())
        if diff:
            raise TrainingError(f"{path}: the run was trained with a different config ({diff}); "
                                f"resume with the run's config.json or start a new --out")
        saved_epochs = ck.get("total_epochs")
        if total_epochs is not None and saved_epochs is not None and saved_epochs != total_epochs:
            raise TrainingError(f"{path}: the run was scheduled for {saved_epochs} epochs, not "
                                f"{total_epochs}: the learning-rate schedule would change; resume "
                                f"with --epochs {saved_epochs}, or pass --reschedule to continue "
                                f"the schedule over {total_epochs} epochs")

    def _set_modes(self, model: DPersona, stage: int) -> None:
        model.train()
        if stage == 2:
            # Stage I parts are frozen; eval mode keeps BatchNorm statistics fixed so that both
            # stages share one exact backbone (reference: train mode, statistics drift).
            for m in model.stage1_modules():
                m.train(not self.cfg.freeze_backbone_stage2 if m is model.backbone else False)

    def prepare_model(self, model: DPersona) -> DPersona:
        """Move the model to the trainer's device and memory format."""
        return model.to(self.device, memory_format=self.memory_format)

    def _stage1_loss(self, model: DPersona, img, msk, rng) -> Dict[str, torch.Tensor]:
        if self.fast:
            return self._stage1_loss_fast(model, img, msk, rng)
        return self._stage1_loss_direct(model, img, msk, rng)

    def _stage1_encode(self, model: DPersona, img, msk):
        """The part both stage-I losses share: the feature term, the prior and posterior
        Gaussians, and the code z of the dice sample (from the posterior or the prior, per
        `posterior_sample`), drawn with the same one `torch.randn` call in both paths."""
        cfg = self.cfg
        n = img.shape[0]
        feats = model.backbone(img)
        ft = model.fcomb.feature_term(feats)
        mu_p, ls_p = model.prior(img)
        mu_q, ls_q = model.posterior(torch.cat([img, msk], dim=1))
        eps = torch.randn(n, 1, cfg.model.latent_size, device=img.device)
        if cfg.posterior_sample:
            z = mu_q.unsqueeze(1) + torch.exp(ls_q).unsqueeze(1) * eps
        else:
            z = mu_p.unsqueeze(1) + torch.exp(ls_p).unsqueeze(1) * eps
        return ft, (mu_p, ls_p), (mu_q, ls_q), z

    def _stage1_total(self, model: DPersona, dice, kl, bound) -> Dict[str, torch.Tensor]:
        """The weighted stage-I loss and its detached parts, from dice, KL and bound terms."""
        cfg = self.cfg
        reg = losses.l2_norm_sum(list(model.prior.parameters()) + list(model.posterior.parameters())
                                 + list(model.fcomb.regularised_parameters()))
        loss = dice + cfg.kl_weight * kl + cfg.bound_weight * bound + cfg.l2_weight * reg
        return {"loss": loss, "dice": dice.detach(), "kl": kl.detach(), "bound": bound.detach(),
                "l2": reg.detach()}

    def _stage1_loss_fast(self, model: DPersona, img, msk, rng) -> Dict[str, torch.Tensor]:
        """`_stage1_loss_direct`, same values and gradients, same random draws, less work: the
        bound loss needs, per pixel, only the highest and the lowest of the S prior samples'
        probabilities, and max/min pass gradients to that one sample. So the S samples are decoded
        once without autograd to find which sample that is (`Fcomb.extreme_samples`), and only the
        selected code per pixel is decoded with autograd (`Fcomb.forward_selected`), together with
        the posterior sample: 3 maps per image through Fcomb's backward instead of 1 + S."""
        cfg = self.cfg
        n, L = img.shape[0], cfg.model.latent_size
        ft, (mu_p, ls_p), (mu_q, ls_q), z = self._stage1_encode(model, img, msk)
        rater = int(rng.randint(msk.shape[1]))
        eps_b = torch.randn(n, cfg.bound_samples, L, device=img.device)
        z_b = mu_p.unsqueeze(1) + torch.exp(ls_p).unsqueeze(1) * eps_b
        upper_idx, lower_idx = model.fcomb.extreme_samples(ft, z_b)
        codes = torch.cat([z, z_b], dim=1)  # code 0: the dice sample; 1..S: the bound samples
        index = torch.cat([torch.zeros_like(upper_idx), upper_idx + 1, lower_idx + 1])
        logits = model.fcomb.forward_selected(torch.cat([ft] * 3), torch.cat([codes] * 3), index)
        probs, upper, lower = torch.sigmoid(logits).split(n)
        dice = losses.soft_dice_loss(probs, msk[:, rater])
        kl = losses.kl_diag_gaussians(mu_q, ls_q, mu_p, ls_p)
        bound = losses.bound_loss_from_extremes(upper, lower, msk)
        return self._stage1_total(model, dice, kl, bound)

    def _stage1_loss_direct(self, model: DPersona, img, msk, rng) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        n, L = img.shape[0], cfg.model.latent_size
        ft, (mu_p, ls_p), (mu_q, ls_q), z = self._stage1_encode(model, img, msk)
        probs = torch.sigmoid(model.fcomb(ft, z)[:, 0])
        rater = int(rng.randint(msk.shape[1]))
        dice = losses.soft_dice_loss(probs, msk[:, rater])
        kl = losses.kl_diag_gaussians(mu_q, ls_q, mu_p, ls_p)
        eps_b = torch.randn(n, cfg.bound_samples, L, device=img.device)
        z_b = mu_p.unsqueeze(1) + torch.exp(ls_p).unsqueeze(1) * eps_b
        bound = losses.bound_loss(torch.sigmoid(model.fcomb(ft, z_b)), msk)
        return self._stage1_total(model, dice, kl, bound)

    def _stage2_loss(self, model: DPersona, img, msk) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        n = img.shape[0]
        with torch.no_grad():
            feats = model.backbone(img)
            ft = model.fcomb.feature_term(feats)
            mu, ls = model.prior(img)
            eps = torch.randn(n, cfg.bank_size_train, cfg.model.latent_size, device=img.device)
            bank = mu.unsqueeze(1) + torch.exp(ls).unsqueeze(1) * eps
        probs = torch.sigmoid(model.fcomb(ft, model.rater_codes(feats, bank)))  # [N,R,H,W]
        per_rater = [losses.soft_dice_loss(probs[:, r], msk[:, r]) for r in range(msk.shape[1])]
        loss = torch.stack(per_rater).mean()
        return {"loss": loss}

    def validate(self, model: DPersona, stage: int) -> Dict:
        ds = self.val_set
        if self.cfg.val_limit is not None:
            ds = ds.subset(range(min(len(ds), self.cfg.val_limit)))
        return evaluate_model(model, ds, samples=self.cfg.val_samples,
                              bank_size=self.cfg.val_bank_size, heads=(stage == 2),
                              threshold=self.cfg.threshold, seed=self.cfg.seed,
                              device=self.device, batch_size=self.cfg.batch_size)
