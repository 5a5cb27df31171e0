"""The trainer's fast formulation (channels-last tensors; the bound loss decoding only the extreme
sample per pixel) computes the same losses and gradients as the direct formulation of the
reference, from the same random draws: exactly in float64 (up to summation order), and in float32
no further from the float64 values than the direct formulation itself is."""
import copy

import numpy as np
import pytest
import torch

from training.bench import _synthetic
from training.config import lite, tiny
from training.data import to_tensors
from training.model import DPersona
from training.trainer import Trainer


def _blobs(n, raters, size, seed):
    """Images with structure and rater masks of different sizes, some raters empty."""
    ds = _synthetic(n, raters, size)
    rng = np.random.RandomState(seed)
    images = (ds.images.astype(np.float32) * 0.3 + 180 * ds.masks[:, :1]).clip(0, 255)
    masks = ds.masks.copy()
    masks[0, -1] = 0  # one rater did not mark the first image
    images = images + rng.randint(0, 40, images.shape)
    return images.clip(0, 255).astype(np.uint8), masks


def _step(cfg, model, fast, stage, img, msk, dtype, tmp_path):
    ds = _synthetic(4, cfg.model.num_raters, cfg.model.image_size)
    tr = Trainer(cfg, str(tmp_path / f"run-{fast}-{stage}-{dtype}"), ds, ds, device="cpu",
                 progress=False, log=lambda m: None, fast=fast)
    m = tr.prepare_model(copy.deepcopy(model).to(dtype))
    if stage == 2:
        for mod in m.stage1_modules():
            for p in mod.parameters():
                p.requires_grad_(False)
    tr._set_modes(m, stage)
    fmt = tr.memory_format
    img = img.to(dtype).contiguous(memory_format=fmt)
    msk = msk.to(dtype).contiguous(memory_format=fmt)
    torch.manual_seed(11)
    rng = np.random.RandomState(3)
    parts = tr._stage1_loss(m, img, msk, rng) if stage == 1 else tr._stage2_loss(m, img, msk)
    parts["loss"].backward()
    grads = {k: p.grad.detach().double().clone() for k, p in m.named_parameters()
             if p.grad is not None}
    return {k: float(v) for k, v in parts.items()}, grads


def _flat(grads):
    return torch.cat([grads[k].flatten() for k in sorted(grads)])


@pytest.fixture(scope="module")
def tiny_batch():
    cfg = tiny()
    images, masks = _blobs(4, cfg.model.num_raters, cfg.model.image_size, 0)
    img, msk = to_tensors(images, masks)
    torch.manual_seed(1)
    return cfg, DPersona(cfg.model), img, msk


@pytest.mark.parametrize("stage", [1, 2])
def test_fast_equals_direct_in_float64(tmp_path, tiny_batch, stage):
    cfg, model, img, msk = tiny_batch
    direct_parts, direct = _step(cfg, model, False, stage, img, msk, torch.float64, tmp_path)
    fast_parts, fast = _step(cfg, model, True, stage, img, msk, torch.float64, tmp_path)
    assert direct_parts.keys() == fast_parts.keys()
    for k in direct_parts:
        assert fast_parts[k] == pytest.approx(direct_parts[k], rel=1e-12, abs=1e-12), k
    assert sorted(direct) == sorted(fast) and len(direct) > 0
    for k in direct:
        assert torch.allclose(fast[k], direct[k], rtol=1e-9, atol=1e-12), k


def test_fast_equals_direct_in_float32(tmp_path, tiny_batch):
    """float32: ReLU kinks and near-equal samples make any two summation orders differ a little;
    the fast gradients must be as close to the float64 gradients as the direct ones are."""
    cfg, model, img, msk = tiny_batch
    _, exact = _step(cfg, model, False, 1, img, msk, torch.float64, tmp_path)
    direct_parts, direct = _step(cfg, model, False, 1, img, msk, torch.float32, tmp_path)
    fast_parts, fast = _step(cfg, model, True, 1, img, msk, torch.float32, tmp_path)
    for k in direct_parts:
        assert fast_parts[k] == pytest.approx(direct_parts[k], rel=1e-5), k
    ref = _flat(exact)
    err_direct = ((_flat(direct) - ref).norm() / ref.norm()).item()
    err_fast = ((_flat(fast) - ref).norm() / ref.norm()).item()
    assert err_fast < 1e-3 and err_fast <= max(3 * err_direct, 1e-5), (err_fast, err_direct)


def test_extreme_samples_are_the_max_and_min_of_the_decoded_samples():
    cfg = lite()
    torch.manual_seed(2)
    model = DPersona(cfg.model).double()
    feats = torch.randn(3, cfg.model.feature_channels, 32, 32, dtype=torch.float64)
    z = torch.randn(3, 10, cfg.model.latent_size, dtype=torch.float64)
    ft = model.fcomb.feature_term(feats)
    probs = torch.sigmoid(model.fcomb(ft, z))
    hi, lo = model.fcomb.extreme_samples(ft, z)
    assert torch.equal(hi, probs.max(dim=1).indices)
    assert torch.equal(lo, probs.min(dim=1).indices)
    for idx in (hi, lo):
        sel = model.fcomb.forward_selected(ft, z, idx)
        want = model.fcomb(ft, z).gather(1, idx[:, None])[:, 0]
        assert torch.allclose(sel, want, rtol=1e-12, atol=1e-12)


def test_channels_last_feature_term_is_the_conv():
    cfg = lite()
    torch.manual_seed(3)
    model = DPersona(cfg.model).double()
    feats = torch.randn(2, cfg.model.feature_channels, 16, 16, dtype=torch.float64)
    want = model.fcomb.feature_term(feats)
    got = model.fcomb.feature_term(feats.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_channels_last_evaluation_equals_nchw(lidc_val):
    from training.evaluate import evaluate_model, for_cpu_inference
    cfg = lite()
    torch.manual_seed(4)
    model = DPersona(cfg.model)
    ds = lidc_val.subset(range(6))
    want = evaluate_model(model, ds, samples=4, bank_size=8, batch_size=3)
    got = evaluate_model(for_cpu_inference(model, torch.device("cpu")), ds, samples=4,
                         bank_size=8, batch_size=3)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert np.allclose(got[k], v, atol=2e-3), (k, got[k], v)
