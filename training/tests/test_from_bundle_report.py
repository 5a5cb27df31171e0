"""Rebuilding a checkpoint from a bundle (the committed default), and the validation report's
baselines and size groups."""
import os

import numpy as np
import pytest
import torch

from training import losses
from training.data import MultiRaterSet
from training.metrics import MetricAccumulator, dice, ged
from training.report import (score_baseline, size_cut_points, size_groups, summarise)

from .conftest import LIDC_VAL, REPO, require

DEFAULT = os.path.join(REPO, "models", "default")


def test_default_bundle_rebuilds_into_an_equal_training_checkpoint(tmp_path):
    from training.from_bundle import main, rebuild
    require(LIDC_VAL)
    import json
    with open(os.path.join(DEFAULT, "manifest.json")) as f:
        config = json.load(f)["config"]
    model, report = rebuild(DEFAULT, config, LIDC_VAL, calibration_images=24)
    # every backbone conv came back from its folded form, and the result serves the bundle's
    # function: its golden vectors
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.backbone.modules())
    assert report["folded_convs"] == n_convs
    assert report["golden_max_abs_diff"] <= 1e-4, report
    # The posterior starts as the prior: KL 0 on real images whatever the masks
    from training.data import load_npz, to_tensors
    ds = load_npz(LIDC_VAL).subset(range(4))
    img, msk = to_tensors(ds.images, ds.masks)
    with torch.no_grad():
        mu_p, ls_p = model.prior(img)
        mu_q, ls_q = model.posterior(torch.cat([img, msk], 1))
    assert float(losses.kl_diag_gaussians(mu_q, ls_q, mu_p, ls_p)) == pytest.approx(0, abs=1e-6)
    out = tmp_path / "init.pt"
    assert main([DEFAULT, "--config", config, "--data", LIDC_VAL, "--out", str(out),
                 "--calibration-images", "24"]) == 0
    from training.checkpoint import load_checkpoint
    cfg, loaded, stage = load_checkpoint(str(out))
    assert cfg.name == config and stage == 2


def test_a_bundle_of_another_config_is_refused():
    from training.from_bundle import rebuild
    require(LIDC_VAL)
    with pytest.raises(ValueError, match=r"models/default: prior.encoder.0.weight is \(\d+, 1, 3, 3\) "
                                         r"in the bundle, \(4, 1, 3, 3\) in config tiny"):
        rebuild(DEFAULT, "tiny", LIDC_VAL, calibration_images=4)


def _set():
    masks = np.zeros((4, 3, 8, 8), np.uint8)
    masks[0, 0, :2, :2] = 1          # largest area 4
    masks[1, :, :4, :4] = 1          # 16
    masks[2, 1, :, :] = 1            # 64
    # image 3: no outline
    return MultiRaterSet(np.zeros((4, 1, 8, 8), np.uint8), masks, [f"p{i}/n/s" for i in range(4)],
                         "mem")


def test_size_groups_use_the_largest_rater_and_fixed_cuts():
    ds = _set()
    assert list(size_groups(ds.masks, [4, 16])) == [0, 1, 2, 3]
    assert list(size_groups(ds.masks, [3, 64])) == [1, 1, 1, 3]
    cuts = size_cut_points(ds.masks)  # terciles of 4, 16, 64 (the empty slice ignored)
    assert cuts == [round(np.percentile([4, 16, 64], 100 / 3)),
                    round(np.percentile([4, 16, 64], 200 / 3))]


def test_baselines_are_scored_by_the_project_metrics():
    ds = _set()
    empty = score_baseline("empty", ds, samples=4, threshold=0.5)
    union = score_baseline("union", ds, samples=4, threshold=0.5)
    # per image, by the metric functions themselves
    for i, raters in enumerate(ds.masks):
        none = np.zeros((4, 8, 8), bool)
        assert empty.rows["ged"][i] == pytest.approx(ged(raters, none, 1.0))
        assert empty.rows["ged_empty0"][i] == pytest.approx(ged(raters, none, 0.0))
        u = np.repeat(raters.max(0)[None], 4, 0)
        assert union.rows["dice_max"][i] == pytest.approx(
            max(dice(u[0], r) for r in raters))
    # image 3 has no outline: predicting nothing is perfect there, the empty-pair convention decides
    assert empty.rows["ged_empty0"][3] == pytest.approx(0.0)
    assert empty.rows["ged"][3] == pytest.approx(0.0)  # all pairs distance 1: 2*1 - 1 - 1
    assert empty.rows["dice_soft"][3] == pytest.approx(1.0)
    # summaries of a subset are means over that subset
    sub = summarise(union, np.array([0, 2]))
    assert sub["images"] == 2
    assert sub["dice_soft"] == pytest.approx(np.mean([union.rows["dice_soft"][i] for i in (0, 2)]))
    assert len(sub["personalised_dice_per_rater"]) == 3
    assert summarise(union)["images"] == 4
