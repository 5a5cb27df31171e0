"""Losses on hand-computed values; model structure (sizes from the paper), the exact Fcomb split,
projection heads, attention, and the serving function."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import losses
from training.config import lite, reference, tiny
from training.model import DPersona, Fcomb, ProjectionHead, attend, count_parameters


def test_soft_dice_loss_hand_values():
    t = torch.ones(2, 4, 4)
    assert float(losses.soft_dice_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    p = torch.full((2, 4, 4), 0.5)
    # foreground: 2*0.5n/(1.5n) = 2/3; background: p=.5, t=0 -> ~0; loss = 1 - (2/3)/2
    assert float(losses.soft_dice_loss(p, t)) == pytest.approx(1 - (2 / 3) / 2, abs=1e-5)
    # batch-level: sums run over the whole batch, not per image
    p2 = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])
    t2 = torch.stack([torch.ones(4, 4), torch.ones(4, 4)])
    fg = 2 * 16 / (16 + 32)
    bg = 2 * 0 / (16 + 0)
    assert float(losses.soft_dice_loss(p2, t2)) == pytest.approx(1 - (fg + bg) / 2, abs=1e-5)


def test_kl_hand_values():
    z = torch.zeros(3, 6)
    assert float(losses.kl_diag_gaussians(z, z, z, z)) == pytest.approx(0.0)
    # one dim: q = N(1, 1), p = N(0, 1): KL = 0.5 * mu^2 = 0.5; 6 dims -> 3
    mu_q = torch.ones(3, 6)
    assert float(losses.kl_diag_gaussians(mu_q, z, z, z)) == pytest.approx(3.0)
    # q = N(0, e^-2), p = N(0, 1): log(1/e^-1) + e^-2/2 - 1/2 per dim
    ls_q = torch.full((1, 1), -1.0)
    want = 1 + np.exp(-2) / 2 - 0.5
    assert float(losses.kl_diag_gaussians(torch.zeros(1, 1), ls_q, torch.zeros(1, 1),
                                          torch.zeros(1, 1))) == pytest.approx(want)


def test_bound_loss_zero_when_samples_span_union_and_intersection():
    union = torch.zeros(1, 8, 8)
    union[0, 2:6, 2:6] = 1
    inter = torch.zeros(1, 8, 8)
    inter[0, 3:5, 3:5] = 1
    masks = torch.stack([union, inter], dim=1)  # raters: [N=1, R=2]
    samples = torch.stack([union, inter, inter], dim=1)
    assert float(losses.bound_loss(samples, masks)) == pytest.approx(0.0, abs=1e-5)
    assert float(losses.bound_loss(1 - samples, masks)) > 1.5


def test_l2_norm_sum_is_unsquared():
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert float(losses.l2_norm_sum([a, b])) == pytest.approx(6.0)


def test_reference_sizes_match_the_paper():
    m = DPersona(reference().model)
    assert count_parameters(m) == pytest.approx(28.5e6, rel=0.01)
    assert count_parameters(m.backbone) == pytest.approx(24.4e6, rel=0.01)
    assert count_parameters(m.prior) == pytest.approx(2.0e6, rel=0.03)
    assert count_parameters(m.heads) == pytest.approx(88e3, rel=0.01)
    assert len(m.heads) == 4


def test_fcomb_split_equals_concatenated_convs():
    torch.manual_seed(0)
    fc = Fcomb(16, 6, 16, 4)
    feats = torch.randn(2, 16, 8, 8)
    z = torch.randn(2, 3, 6)
    got = fc(fc.feature_term(feats), z)  # [2,3,8,8]
    for s in range(3):
        x = torch.cat([feats, z[:, s, :, None, None].expand(-1, -1, 8, 8)], dim=1)
        x = F.relu(fc.first(x))
        for conv in fc.hidden:
            x = F.relu(conv(x))
        want = fc.last(x)[:, 0]
        assert torch.allclose(got[:, s], want, atol=1e-5)


def test_projection_head_grows_maps_and_yields_a_query():
    head = ProjectionHead(16, (32, 16), 6, 0.1).eval()
    convs = [m for m in head.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(3, 3)] * 6  # 3x3 convs with padding 3
    q = head(torch.randn(2, 16, 128, 128))
    assert q.shape == (2, 1, 6)
    assert (q >= 0).all()  # final ReLU


def test_attention_is_softmax_without_scaling():
    q = torch.tensor([[[1.0, 0.0]]])
    bank = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    w = torch.softmax(torch.tensor([2.0, 0.0]), dim=0)
    want = w[0] * bank[0, 0] + w[1] * bank[0, 1]
    assert torch.allclose(attend(q, bank)[0], want)


def test_serve_shapes_and_noise_semantics():
    torch.manual_seed(0)
    cfg = tiny().model
    m = DPersona(cfg).eval()
    img = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        sp, rp = m.serve(img, torch.zeros(3, 5, 6), torch.randn(3, 7, 6))
        assert sp.shape == (3, 5, 128, 128) and rp.shape == (3, 4, 128, 128)
        assert torch.allclose(sp[:, 0], sp[:, 4])  # eps = 0: every sample is the prior mean
        eps = torch.randn(3, 5, 6)
        sp2, _ = m.serve(img, eps, torch.randn(3, 7, 6))
        assert torch.allclose(sp2, m.sample_probs(img, eps), atol=1e-6)
        # one image at a time gives the same outputs (batch independence in eval mode)
        sp1, _ = m.serve(img[1:2], eps[1:2], torch.randn(1, 7, 6))
        assert torch.allclose(sp1[0], sp2[1], atol=1e-5)
    assert float(sp.min()) >= 0 and float(sp.max()) <= 1


def test_lite_is_narrow_and_keeps_the_layout():
    r, l = reference().model, lite().model
    assert l.stage_blocks == r.stage_blocks == (3, 4, 6, 3)
    assert max(l.stage_widths) < max(r.stage_widths)
    assert count_parameters(DPersona(l)) < count_parameters(DPersona(r)) / 5
