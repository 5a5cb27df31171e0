"""Augmentations (masks move with their image; intensity keeps the min-max input), mid-epoch
checkpoints and resume, and bad input: each stops with the file and the problem named."""
import json
import os

import numpy as np
import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint
from training.cli import main as cli_main
from training.config import tiny
from training.data import DataError, MultiRaterSet, augment_crops, load_npz
from training.trainer import Trainer, TrainingError


def quiet_trainer(cfg, run, train, val, **kw):
    return Trainer(cfg, str(run), train, val, device="cpu", progress=False, log=lambda m: None,
                   **kw)


# ---------------------------------------------------------------- augmentation
def _asymmetric_crops(n):
    """Images whose grey values encode the mask exactly (mask pixels 255, others 0 to 200) and
    whose shape has no symmetry, so any mismatch between image and mask transforms shows."""
    rng = np.random.RandomState(0)
    masks = np.zeros((n, 2, 16, 16), np.uint8)
    masks[:, 0, 2:5, 3:11] = 1   # a horizontal bar
    masks[:, 0, 5:9, 3:5] = 1    # and a leg: an L
    masks[:, 1, 10:14, 12:15] = 1
    images = rng.randint(0, 201, (n, 1, 16, 16)).astype(np.uint8)
    images[masks[:, :1] == 1] = 255
    return images, masks


def test_flips_and_rotations_move_masks_with_their_image():
    images, masks = _asymmetric_crops(64)
    out_i, out_m = augment_crops(images, masks, True, True, 0.0, np.random.RandomState(1))
    assert out_i.dtype == np.uint8 and out_m.dtype == np.uint8
    assert out_i.shape == images.shape and out_m.shape == masks.shape
    # the image's 255 pixels are still exactly rater 0's mask
    np.testing.assert_array_equal(out_i[:, 0] == 255, out_m[:, 0] == 1)
    # every one of the 8 symmetries of the square occurs, and nothing else
    def symmetries(m):
        out = []
        for t in range(4):
            r = np.rot90(m, t)
            out += [r.tobytes(), r[:, ::-1].tobytes()]
        return out
    seen = {out_m[k, 0].tobytes() for k in range(64)}
    allowed = set(symmetries(masks[0, 0]))
    assert len(allowed) == 8 and seen <= allowed and len(seen) == 8
    # the second rater went through the same transform as the first
    for k in range(64):
        idx = symmetries(masks[0, 0]).index(out_m[k, 0].tobytes())
        assert symmetries(masks[0, 1])[idx] == out_m[k, 1].tobytes()
    # the inputs were not modified in place
    np.testing.assert_array_equal(augment_crops(images, masks, False, False, 0.0,
                                                np.random.RandomState(1))[0], images)


def test_gamma_keeps_the_min_max_normalised_range_and_the_masks():
    images, masks = _asymmetric_crops(16)
    images[:, 0, 0, 0] = 0
    out_i, out_m = augment_crops(images, masks, False, False, 0.4, np.random.RandomState(2))
    np.testing.assert_array_equal(out_m, masks)
    assert (out_i.reshape(16, -1).min(axis=1) == 0).all()
    assert (out_i.reshape(16, -1).max(axis=1) == 255).all()
    assert (out_i != images).any()
    for k in range(16):  # a monotone map of the grey values
        order = np.argsort(images[k].ravel(), kind="stable")
        assert (np.diff(out_i[k].ravel()[order].astype(int)) >= 0).all()


def test_augmentation_reaches_the_training_batches(tmp_path, lidc_small):
    train, val = lidc_small
    cfg = tiny()
    cfg.flip_augment = cfg.rot90_augment = True
    tr = quiet_trainer(cfg, tmp_path / "aug", train, val)
    plain = quiet_trainer(tiny(), tmp_path / "plain", train, val)
    order = np.arange(len(train))
    a = [m for _, m in tr._batches(np.random.RandomState(0), 1, order)]
    b = [m for _, m in plain._batches(np.random.RandomState(0), 1, order)]
    assert any(not torch.equal(x, y) for x, y in zip(a, b))
    # per-rater areas are unchanged by flips and rotations
    for x, y in zip(a, b):
        assert torch.equal(x.sum(dim=(2, 3)), y.sum(dim=(2, 3)))


# ---------------------------------------------------------------- mid-epoch checkpoints
def _mid_epoch_cfg():
    cfg = tiny()
    cfg.images_per_epoch = 24  # 6 steps of 4
    cfg.val_limit = 2
    cfg.shift_augment = 8
    cfg.flip_augment = cfg.rot90_augment = True
    return cfg


@pytest.mark.parametrize("stage", [1, 2])
def test_a_crash_mid_epoch_loses_only_the_steps_since_the_last_checkpoint(tmp_path, lidc_small,
                                                                          stage):
    train, val = lidc_small
    cfg = _mid_epoch_cfg()
    straight_tr = quiet_trainer(cfg, tmp_path / "a", train, val, checkpoint_every=2)
    if stage == 2:
        straight_tr.train(1, epochs=1)
    straight = straight_tr.train(stage, epochs=2)

    interrupted = quiet_trainer(cfg, tmp_path / "b", train, val, checkpoint_every=2)
    if stage == 2:
        interrupted.train(1, epochs=1)
    loss_fn = "_stage1_loss" if stage == 1 else "_stage2_loss"
    original = getattr(interrupted, loss_fn)
    calls = {"n": 0}

    def crash_in_second_epoch(*a):
        calls["n"] += 1
        if calls["n"] == 6 + 4:  # epoch 2, step 4: the checkpoint after its step 2 survives
            raise KeyboardInterrupt("simulated crash")
        return original(*a)
    setattr(interrupted, loss_fn, crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train(stage, epochs=2)
    ck = torch.load(os.path.join(tmp_path, "b", f"stage{stage}", "last.pt"), weights_only=False)
    assert ck["epoch"] == 1 and ck["partial_epoch"]["batch"] == 2 and ck["step"] == 8

    resumed_tr = quiet_trainer(cfg, tmp_path / "b", train, val, checkpoint_every=2)
    calls_after = {"n": 0}
    original_resumed = getattr(resumed_tr, loss_fn)

    def count(*a):
        calls_after["n"] += 1
        return original_resumed(*a)
    setattr(resumed_tr, loss_fn, count)
    resumed = resumed_tr.train(stage, resume=True, epochs=2)
    assert calls_after["n"] == 4  # only the 4 steps after the checkpoint were redone
    assert [h["step"] for h in resumed["history"]] == [6, 12]
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-6)
    wa = torch.load(os.path.join(tmp_path, "a", f"stage{stage}", "last.pt"), weights_only=False)
    wb = torch.load(os.path.join(tmp_path, "b", f"stage{stage}", "last.pt"), weights_only=False)
    for k in wa["model"]:
        assert torch.allclose(wa["model"][k].float(), wb["model"][k].float(), atol=1e-5), k


# ---------------------------------------------------------------- bad input
def test_rater_count_mismatch_names_the_file(tmp_path, qubiq, lidc_small):
    with pytest.raises(TrainingError, match=r"qubiq_brain_growth.npz: training data has 7 raters"):
        quiet_trainer(tiny(), tmp_path, qubiq, lidc_small[1])


def test_cli_rater_count_mismatch_names_the_file(tmp_path, qubiq, capsys):
    code = cli_main(["train", "--stage", "1", "--config", "tiny", "--out", str(tmp_path / "r"),
                     "--data", qubiq.source, "--val", qubiq.source, "--no-progress"])
    assert code == 2
    assert "qubiq_brain_growth.npz: 7 raters but the config expects 4" in capsys.readouterr().err


def test_all_empty_masks_are_refused(tmp_path, lidc_small):
    train, val = lidc_small
    empty = MultiRaterSet(train.images, np.zeros_like(train.masks), train.ids, "/data/empty.npz")
    with pytest.raises(DataError, match=r"/data/empty.npz: every training mask is empty"):
        quiet_trainer(tiny(), tmp_path, empty, val)
    with pytest.raises(DataError, match=r"/data/empty.npz: every validation mask is empty"):
        quiet_trainer(tiny(), tmp_path / "v", train, empty)


def test_slices_without_any_outline_are_reported_not_refused(tmp_path, lidc_small):
    train, val = lidc_small
    masks = train.masks.copy()
    masks[:3] = 0
    some = MultiRaterSet(train.images, masks, train.ids, "/data/some.npz")
    notes = []
    Trainer(tiny(), str(tmp_path), some, val, device="cpu", progress=False, log=notes.append)
    assert any("no rater outline" in n and "/data/some.npz" in n and "LIDC-IDRI" in n for n in notes), notes


def test_empty_npz_is_refused(tmp_path):
    p = tmp_path / "none.npz"
    np.savez(p, images=np.zeros((0, 8, 8), np.uint8), masks=np.zeros((0, 4, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"none.npz: no slices"):
        load_npz(str(p))
    np.savez(p, images=np.zeros((2, 8, 8), np.uint8), masks=np.zeros((2, 0, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"none.npz: masks have no rater"):
        load_npz(str(p))


def test_truncated_and_corrupt_npz_name_the_file(tmp_path):
    good = tmp_path / "good.npz"
    rng = np.random.RandomState(0)
    np.savez_compressed(good, images=rng.randint(0, 255, (20, 32, 32)).astype(np.uint8),
                        masks=(rng.rand(20, 4, 32, 32) > 0.5).astype(np.uint8))
    data = good.read_bytes()
    for name, content in (("truncated.npz", data[: len(data) // 2]),
                          ("cut-at-the-end.npz", data[:-30]),
                          ("corrupt.npz", data[:200] + bytes(len(data) - 400) + data[-200:]),
                          ("noise.npz", rng.bytes(4096))):
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(DataError, match=rf"{name}: not a readable .npz file"):
            load_npz(str(p))


def test_truncated_or_foreign_checkpoint_names_the_file(tmp_path, tiny_run, capsys):
    best = os.path.join(tiny_run["dir"], "stage2", "best.pt")
    data = open(best, "rb").read()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(str(bad))
    assert cli_main(["evaluate", "--checkpoint", str(bad), "--limit", "2"]) == 2
    assert "cut.pt: not a readable PyTorch checkpoint" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign.pt: not a training checkpoint"):
        load_checkpoint(str(foreign))
    # a checkpoint of another architecture given to --init
    other = tmp_path / "other.pt"
    state = torch.load(best, weights_only=False)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("prior.")}
    torch.save(state, other)
    with pytest.raises(CheckpointError, match=r"other.pt: its weights do not fit"):
        load_checkpoint(str(other))


def test_resume_from_a_truncated_last_checkpoint_names_it(tmp_path, lidc_small):
    train, val = lidc_small
    cfg = tiny()
    cfg.images_per_epoch = 8
    cfg.val_limit = 2
    quiet_trainer(cfg, tmp_path, train, val).train(1, epochs=1)
    last = tmp_path / "stage1" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"last.pt: not a readable PyTorch checkpoint"):
        quiet_trainer(cfg, tmp_path, train, val).train(1, resume=True, epochs=1)


def test_resume_with_another_config_or_schedule_is_refused(tmp_path, lidc_small):
    train, val = lidc_small
    cfg = tiny()
    cfg.images_per_epoch = 8
    cfg.val_limit = 2
    quiet_trainer(cfg, tmp_path, train, val).train(1, epochs=2)
    other = tiny()
    other.images_per_epoch = 8
    other.val_limit = 2
    other.lr = 0.5
    with pytest.raises(TrainingError, match=r"config.json holds a different config \(lr: 0.001 vs"
                                            r" 0.5\)"):
        quiet_trainer(other, tmp_path, train, val)
    with pytest.raises(TrainingError, match=r"last.pt: the run was scheduled for 2 epochs, not 3"):
        quiet_trainer(cfg, tmp_path, train, val).train(1, resume=True, epochs=3)
    with pytest.raises(TrainingError, match=r"last.pt: already 2 epochs, more than --epochs 1"):
        quiet_trainer(cfg, tmp_path, train, val).train(1, resume=True, epochs=1, reschedule=True)
    # a checkpoint copied in from a run with another config
    last = tmp_path / "stage1" / "last.pt"
    ck = torch.load(last, weights_only=False)
    ck["config"]["bound_weight"] = 0.25
    torch.save(ck, last)
    with pytest.raises(TrainingError, match=r"last.pt: the run was trained with a different config "
                                            r"\(bound_weight: 0.25 vs 0.5\)"):
        quiet_trainer(cfg, tmp_path, train, val).train(1, resume=True, epochs=2)


def test_cli_resume_with_another_config_is_refused(tmp_path, lidc_small, capsys):
    train, val = lidc_small
    for name, ds in (("small_train", train), ("small_val", val)):
        np.savez(tmp_path / f"{name}.npz", images=ds.images[:, 0], masks=ds.masks)
        (tmp_path / f"{name}.ids.txt").write_text("\n".join(ds.ids) + "\n")
    base = ["train", "--stage", "1", "--config", "tiny", "--out", str(tmp_path / "run"),
            "--data", str(tmp_path / "small_train.npz"), "--val", str(tmp_path / "small_val.npz"),
            "--set", "images_per_epoch=8", "--set", "val_limit=2", "--epochs", "1",
            "--no-progress"]
    assert cli_main(base) == 0
    capsys.readouterr()
    assert cli_main(base + ["--resume", "--set", "lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "config.json holds a different config (lr: 0.001 vs 0.5)" in err, err
    # stage 2 reads the run's config.json; a --set that changes it is refused, not ignored
    stage2 = ["train", "--stage", "2", "--out", str(tmp_path / "run"), "--data",
              str(tmp_path / "small_train.npz"), "--val", str(tmp_path / "small_val.npz"),
              "--epochs", "1", "--no-progress"]
    assert cli_main(stage2 + ["--set", "images_per_epoch_stage2=4"]) == 2
    err = capsys.readouterr().err
    assert "holds a different config (images_per_epoch_stage2: None vs 4)" in err, err


def test_config_files_without_the_new_fields_still_resume(tmp_path, lidc_small):
    """Run directories written before a config field existed compare equal on its default."""
    train, val = lidc_small
    cfg = tiny()
    cfg.val_limit = 2
    cfg.images_per_epoch = 8
    d = cfg.to_dict()
    for k in ("flip_augment", "rot90_augment", "gamma_augment"):
        d.pop(k)
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(d, f)
    quiet_trainer(cfg, tmp_path, train, val)


def test_parts_split_by_patient_and_read_back_as_one_set(tmp_path, lidc_val):
    from training.data import load_any
    from training.parts import split
    sub = lidc_val.subset(range(200))
    src = tmp_path / "sub_train.npz"
    np.savez_compressed(src, images=sub.images[:, 0], masks=sub.masks)
    (tmp_path / "sub_train.ids.txt").write_text("\n".join(sub.ids) + "\n")
    size_mib = os.path.getsize(src) / 2 ** 20
    files = split(str(src), str(tmp_path / "parts"), max_mib=size_mib / 2.5)
    assert len(files) >= 3
    for f in files:
        assert os.path.getsize(f) <= size_mib / 2.5 * 2 ** 20
    parts = [load_any(f) for f in files]
    seen = [set(p.patients()) for p in parts]
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            assert not seen[i] & seen[j]  # no patient in two parts
    back = load_any(",".join(files))
    np.testing.assert_array_equal(back.images, sub.images)
    np.testing.assert_array_equal(back.masks, sub.masks)
    assert back.ids == sub.ids


def test_reschedule_continues_the_cosine_over_the_new_total(tmp_path, lidc_small):
    train, val = lidc_small
    cfg = tiny()
    cfg.images_per_epoch = 8
    cfg.val_limit = 2
    quiet_trainer(cfg, tmp_path, train, val).train(1, epochs=1)
    tr = quiet_trainer(cfg, tmp_path, train, val)
    seen = []
    original = tr._stage1_loss

    def spy(model, img, msk, rng):
        seen.append(model)
        return original(model, img, msk, rng)
    tr._stage1_loss = spy
    out = tr.train(1, resume=True, epochs=3, reschedule=True)
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3]
    assert len(seen) == 4  # epochs 2 and 3, 2 steps each
    ck = torch.load(tmp_path / "stage1" / "last.pt", weights_only=False)
    assert ck["total_epochs"] == 3
