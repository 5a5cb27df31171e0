"""Metrics on hand-computed cases (docs/dpersona-model.md), empty masks included."""
import itertools

import numpy as np
import pytest

from training import metrics as M


def mask(*pixels, size=4):
    m = np.zeros((size, size), np.uint8)
    for y, x in pixels:
        m[y, x] = 1
    return m


A = mask((0, 0), (0, 1), (1, 0), (1, 1))  # 4 pixels
B = mask((0, 0), (0, 1))  # 2 pixels, inside A
C = mask((3, 3), (3, 2))  # 2 pixels, disjoint from A
E = mask()  # empty


def test_dice_hand_cases():
    assert M.dice(A, A) == pytest.approx(1.0)
    assert M.dice(A, B) == pytest.approx(2 * 2 / 6)
    assert M.dice(A, C) == pytest.approx(1e-8 / 6, abs=1e-12)
    assert M.dice(E, E) == 1.0  # (0 + 1e-8) / (0 + 1e-8)
    assert M.dice(E, A) == pytest.approx(0.0, abs=1e-8)


def test_ged_identical_non_empty_is_zero():
    assert M.ged(np.stack([A, A]), np.stack([A, A, A])) == pytest.approx(0.0)


def test_ged_hand_case_with_partial_overlap():
    # d(A,B) = 1 - IoU = 1 - 2/4 = 0.5. L = [A], P = [B]: 2*0.5 - 0 - 0 = 1.0
    assert M.ged(np.stack([A]), np.stack([B])) == pytest.approx(1.0)
    # L = [A, B], P = [A]: d(L,P) = [0, .5] -> .25; d(L,L) = [[0,.5],[.5,0]] -> .25; d(P,P) = 0
    assert M.ged(np.stack([A, B]), np.stack([A])) == pytest.approx(2 * 0.25 - 0.25)


def test_ged_empty_masks_reference_and_empty_zero():
    L = np.stack([E, A])
    P = np.stack([A])
    # d(L,P) = [1, 0] -> 0.5; d(P,P) = 0.
    # reference: d(E,E) = 1, so d(L,L) = [[1,1],[1,0]] -> 0.75: GED = 1 - 0.75 = 0.25
    assert M.ged(L, P, 1.0) == pytest.approx(0.25)
    # empty-vs-empty = 0: d(L,L) = [[0,1],[1,0]] -> 0.5: GED = 1 - 0.5 = 0.5
    assert M.ged(L, P, 0.0) == pytest.approx(0.5)
    # everything empty: reference 2*1 - 1 - 1 = 0, and 0 with the empty-pair rule too
    assert M.ged(np.stack([E, E]), np.stack([E]), 1.0) == pytest.approx(0.0)
    assert M.ged(np.stack([E, E]), np.stack([E]), 0.0) == pytest.approx(0.0)
    # empty raters, non-empty prediction: 2*1 - 1 - 0 = 1 (reference), 2*1 - 0 - 0 = 2
    assert M.ged(np.stack([E]), np.stack([A]), 1.0) == pytest.approx(1.0)
    assert M.ged(np.stack([E]), np.stack([A]), 0.0) == pytest.approx(2.0)


def test_dice_soft_hand_case():
    raters = np.stack([A, E])  # mean 0.5 on A
    probs = np.stack([A * 0.6])  # mean 0.6 on A
    # t=.1,.3: A vs A -> 1; t=.5: rater mean 0.5 is not > .5 (empty) vs A -> 0; t=.7,.9: E vs E -> 1
    assert M.dice_soft(raters, probs) == pytest.approx(4 / 5, abs=1e-8)


def test_dice_max_and_match_and_personalised():
    raters = np.stack([A, C])
    preds = np.stack([C, A])
    assert M.dice_max(raters, preds) == pytest.approx(1.0)
    assert M.dice_match(raters, preds) == pytest.approx(1.0)
    # heads in the wrong order: personalised Dice (no matching) is ~0, matched Dice is 1
    assert M.personalised_dice(raters, preds) == pytest.approx([0.0, 0.0], abs=1e-8)
    assert M.matched_per_rater_dice(raters, preds) == pytest.approx([1.0, 1.0])
    # an extra prediction: Dice_max averages over predictions, Dice_match ignores the unmatched one
    preds3 = np.stack([C, A, B])
    assert M.dice_max(raters, preds3) == pytest.approx((1 + 1 + 2 * 2 / 6) / 3)
    assert M.dice_match(raters, preds3) == pytest.approx(1.0)


def test_dice_match_needs_enough_predictions():
    with pytest.raises(ValueError, match="at least as many predictions"):
        M.dice_match(np.stack([A, B, C]), np.stack([A, B]))


def test_dice_match_is_optimal_assignment():
    """Hungarian matching equals brute force over all assignments (greedy would not)."""
    rng = np.random.RandomState(3)
    for _ in range(20):
        raters = rng.rand(3, 6, 6) > 0.5
        preds = rng.rand(4, 6, 6) > 0.5
        d = M.pairwise_dice(raters, preds)
        best = max(np.mean([d[r, c] for r, c in enumerate(perm)])
                   for perm in itertools.permutations(range(4), 3))
        assert M.dice_match(raters, preds) == pytest.approx(best)


def test_accumulator_means_over_images():
    acc = M.MetricAccumulator(num_raters=2)
    acc.update(np.stack([A, C]), np.stack([A, C]).astype(float), np.stack([A, C]).astype(float))
    acc.update(np.stack([A, C]), np.stack([C, A]).astype(float), np.stack([C, A]).astype(float))
    r = acc.result()
    assert r["images"] == 2
    assert r["dice_match"] == pytest.approx(1.0)
    assert r["personalised_dice"] == pytest.approx(0.5, abs=1e-8)
    assert r["personalised_dice_per_rater"] == pytest.approx([0.5, 0.5], abs=1e-8)
