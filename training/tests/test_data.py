"""Data: the LIDC-IDRI-slices PNG tree, the shared NPZ files (4 and 7 raters), rater order,
the split by patient, and clear errors for bad input."""
import os

import numpy as np
import pytest
from PIL import Image

from training.cli import main as cli_main
from training.data import (DataError, load_any, load_npz, load_png_tree, order_raters,
                           shift_crops, split_by_patient)


def write_tree(root, patients=2, nodules=2, slices=2, raters=4, size=16, seed=0):
    rng = np.random.RandomState(seed)
    for p in range(patients):
        for n in range(nodules):
            base = os.path.join(root, f"LIDC-IDRI-{p + 1:04d}", f"nodule-{n}")
            os.makedirs(os.path.join(base, "images"))
            for r in range(raters):
                os.makedirs(os.path.join(base, f"mask-{r}"))
            for k in range(slices):
                Image.fromarray(rng.randint(0, 256, (size, size)).astype(np.uint8)).save(
                    os.path.join(base, "images", f"slice-{k}.png"))
                for r in range(raters):
                    m = np.zeros((size, size), np.uint8)
                    m[2:2 + r + k, 3:6] = 255
                    Image.fromarray(m).save(os.path.join(base, f"mask-{r}", f"slice-{k}.png"))


def test_png_tree_reads_every_slice_and_rater(tmp_path):
    write_tree(str(tmp_path), patients=2, nodules=2, slices=3, raters=4)
    ds = load_png_tree(str(tmp_path))
    assert len(ds) == 12 and ds.num_raters == 4
    assert ds.images.shape == (12, 1, 16, 16) and ds.masks.shape == (12, 4, 16, 16)
    assert set(np.unique(ds.masks)) <= {0, 1}
    assert ds.ids[0] == "LIDC-IDRI-0001/nodule-0/slice-0"
    # rater r on slice k outlines (r + k) rows of 3 pixels
    i = ds.ids.index("LIDC-IDRI-0002/nodule-1/slice-2")
    assert [int(ds.masks[i, r].sum()) for r in range(4)] == [6, 9, 12, 15]
    img = np.asarray(Image.open(tmp_path / "LIDC-IDRI-0002" / "nodule-1" / "images" / "slice-2.png"))
    assert np.array_equal(ds.images[i, 0], img)


def test_png_tree_any_rater_count(tmp_path):
    write_tree(str(tmp_path), patients=1, nodules=1, slices=1, raters=7)
    assert load_png_tree(str(tmp_path)).num_raters == 7
    with pytest.raises(DataError, match="7 raters but 4 expected"):
        load_png_tree(str(tmp_path), num_raters=4)


def test_png_tree_missing_mask_names_the_file(tmp_path):
    write_tree(str(tmp_path), patients=1, nodules=1, slices=2, raters=2)
    victim = tmp_path / "LIDC-IDRI-0001" / "nodule-0" / "mask-1" / "slice-1.png"
    victim.unlink()
    with pytest.raises(DataError, match="mask file missing: .*mask-1/slice-1.png"):
        load_png_tree(str(tmp_path))


def test_png_tree_wrong_mask_shape_names_the_file(tmp_path):
    write_tree(str(tmp_path), patients=1, nodules=1, slices=1, raters=2)
    bad = tmp_path / "LIDC-IDRI-0001" / "nodule-0" / "mask-0" / "slice-0.png"
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(bad)
    with pytest.raises(DataError, match=r"mask-0/slice-0.png: mask is \(8, 16\)"):
        load_png_tree(str(tmp_path))


def test_missing_and_malformed_npz(tmp_path):
    with pytest.raises(DataError, match="data file not found: .*nope.npz"):
        load_npz(str(tmp_path / "nope.npz"))
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((3, 8, 8), np.uint8), masks=np.zeros((3, 2, 8, 4), np.uint8))
    with pytest.raises(DataError, match="bad.npz: images are"):
        load_npz(str(p))
    np.savez(p, images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="needs arrays 'images' and 'masks'"):
        load_npz(str(p))


def test_shared_npz_four_and_seven_raters(lidc_val, qubiq):
    assert lidc_val.num_raters == 4 and lidc_val.images.shape[1:] == (1, 128, 128)
    assert qubiq.num_raters == 7 and len(qubiq) == 39
    assert len(lidc_val.ids) == len(lidc_val) and lidc_val.ids[0].startswith("LIDC-IDRI-")


def test_rater_count_mismatch_is_refused(qubiq):
    with pytest.raises(DataError, match="7 raters but the config expects 4"):
        load_any(qubiq.source, num_raters=4)


def test_order_by_area_sorts_each_slice_and_as_is_keeps_order():
    m = np.zeros((2, 3, 4, 4), np.uint8)
    m[0, 0, :3, :3] = 1  # 9
    m[0, 1, :1, :1] = 1  # 1
    m[0, 2, :2, :2] = 1  # 4
    m[1, 2, :1, :2] = 1  # 2; raters 0 and 1 empty
    out = order_raters(m, "area")
    assert [int(out[0, r].sum()) for r in range(3)] == [1, 4, 9]
    assert [int(out[1, r].sum()) for r in range(3)] == [0, 0, 2]
    assert order_raters(m, "as-is") is m
    with pytest.raises(ValueError):
        order_raters(m, "alphabetical")


def test_split_by_patient_never_splits_a_patient(lidc_val):
    train, val = split_by_patient(lidc_val, 0.2)
    assert len(train) + len(val) == len(lidc_val)
    assert not set(train.patients()) & set(val.patients())
    assert 0.05 < len(set(val.patients())) / len(set(lidc_val.patients())) < 0.4


def test_prepare_writes_split_npz_from_png_tree(tmp_path, capsys):
    write_tree(str(tmp_path / "tree"), patients=6, nodules=1, slices=2, raters=4)
    rc = cli_main(["prepare", str(tmp_path / "tree"), "--out", str(tmp_path / "out"),
                   "--val-fraction", "0.5"])
    assert rc == 0
    tr = load_npz(str(tmp_path / "out" / "lidc_train.npz"))
    va = load_npz(str(tmp_path / "out" / "lidc_val.npz"))
    assert len(tr) + len(va) == 12 and tr.num_raters == 4
    assert not set(tr.patients()) & set(va.patients())
    assert "6 patients" in capsys.readouterr().out


def test_cli_reports_missing_data_file(tmp_path, capsys):
    rc = cli_main(["train", "--stage", "1", "--config", "tiny", "--out", str(tmp_path / "run"),
                   "--data", str(tmp_path / "missing.npz")])
    assert rc == 2
    assert "missing.npz" in capsys.readouterr().err


def test_shift_crops_moves_image_and_masks_together():
    rng = np.random.RandomState(7)
    images = np.zeros((20, 1, 128, 128), np.uint8)
    masks = np.zeros((20, 4, 128, 128), np.uint8)
    images[:, :, 60:68, 58:70] = 200  # a "nodule" near the centre, outlined by every rater
    masks[:, :, 60:68, 58:70] = 1
    shifted_i, shifted_m = shift_crops(images, masks, 48, rng)
    assert shifted_i.shape == images.shape and shifted_m.shape == masks.shape
    assert shifted_i.dtype == np.uint8 and shifted_m.dtype == np.uint8
    offsets = set()
    for k in range(20):
        ys, xs = np.nonzero(shifted_i[k, 0] == 200)
        dy, dx = int(ys.min()) - 60, int(xs.min()) - 58
        assert abs(dy) <= 48 and abs(dx) <= 48
        offsets.add((dy, dx))
        # the masks moved by the same offset, and nothing was lost or invented
        for r in range(4):
            assert np.array_equal(shifted_m[k, r], (shifted_i[k, 0] == 200).astype(np.uint8))
    assert len(offsets) > 10  # the shifts vary from crop to crop
    # no shift leaves the arrays alone; a shift as large as the crop is refused
    same_i, same_m = shift_crops(images, masks, 0, rng)
    assert same_i is images and same_m is masks
    with pytest.raises(ValueError, match="smaller than the crop"):
        shift_crops(images, masks, 128, rng)
