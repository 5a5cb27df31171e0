"""Multi-rater data: the NPZ arrays in ../shared/data and the LIDC-IDRI-slices PNG tree.

Every source yields `MultiRaterSet`: images uint8 [N,H,W] (or [N,C,H,W]), masks uint8 [N,R,H,W] in
{0,1}, and one id per row whose first path component is the patient (used to split by patient).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


class DataError(ValueError):
    """Bad or missing input data; the message names the file."""


@dataclass
class MultiRaterSet:
    images: np.ndarray  # uint8 [N,C,H,W]
    masks: np.ndarray  # uint8 [N,R,H,W]
    ids: List[str]
    source: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_raters(self) -> int:
        return int(self.masks.shape[1])

    def patients(self) -> List[str]:
        return [i.split("/")[0] for i in self.ids]

    def subset(self, index: Sequence[int]) -> "MultiRaterSet":
        index = np.asarray(index, dtype=np.int64)
        return MultiRaterSet(self.images[index], self.masks[index], [self.ids[i] for i in index],
                             self.source)


def _validate(images: np.ndarray, masks: np.ndarray, ids: List[str], source: str) -> None:
    if images.ndim == 3:
        raise AssertionError("images must be [N,C,H,W] here")
    if masks.ndim != 4:
        raise DataError(f"{source}: masks must be [N,R,H,W], got shape {masks.shape}")
    if images.shape[0] != masks.shape[0]:
        raise DataError(f"{source}: {images.shape[0]} images but {masks.shape[0]} mask rows")
    if images.shape[2:] != masks.shape[2:]:
        raise DataError(f"{source}: images are {images.shape[2:]} but masks are {masks.shape[2:]}")
    if len(ids) != images.shape[0]:
        raise DataError(f"{source}: {len(ids)} ids for {images.shape[0]} images")
    if images.shape[0] == 0:
        raise DataError(f"{source}: no slices (empty arrays)")
    if masks.shape[1] == 0:
        raise DataError(f"{source}: masks have no rater dimension entries (shape {masks.shape})")
    if masks.size and masks.max() > 1:
        raise DataError(f"{source}: masks must be 0/1, found value {int(masks.max())}")


def load_npz(path: str, ids_path: Optional[str] = None) -> MultiRaterSet:
    """Load `images` [N,H,W] or [N,C,H,W] uint8 and `masks` [N,R,H,W]; ids from `<stem>.ids.txt`."""
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise DataError(f"{path}: a single .npy array, not an .npz archive with 'images' "
                                f"and 'masks'")
            if "images" not in z or "masks" not in z:
                raise DataError(f"{path}: needs arrays 'images' and 'masks', has {sorted(z.files)}")
            images = np.asarray(z["images"])
            masks = np.asarray(z["masks"])
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, ...
        raise DataError(f"{path}: not a readable .npz file, truncated or corrupt "
                        f"({type(e).__name__}: {e})") from e
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{path}: images must be [N,H,W] or [N,C,H,W], got shape {images.shape}")
    if ids_path is None:
        ids_path = path[: -len(".npz")] + ".ids.txt" if path.endswith(".npz") else path + ".ids.txt"
    if os.path.isfile(ids_path):
        with open(ids_path) as f:
            ids = [line.strip() for line in f if line.strip()]
    else:
        stem = os.path.basename(path)
        ids = [f"{stem}-{i}" for i in range(images.shape[0])]  # no patient info: each row alone
    _validate(images, masks, ids, path)
    return MultiRaterSet(images.astype(np.uint8, copy=False), masks.astype(np.uint8, copy=False),
                         ids, path)


_SLICE_RE = re.compile(r"^slice-(\d+)\.png$")
_MASK_RE = re.compile(r"^mask-(\d+)$")


def _read_png(path: str) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except Exception as e:  # PIL raises several types
        raise DataError(f"{path}: cannot read PNG ({e})") from e
    return arr


def load_png_tree(root: str, num_raters: Optional[int] = None) -> MultiRaterSet:
    """Read `LIDC-IDRI-XXXX/nodule-N/{images,mask-0..mask-R-1}/slice-K.png` under root.

    Masks are binarised at > 0 (the PNGs are 0/255). Every slice must have every mask.
    """
    if not os.path.isdir(root):
        raise DataError(f"PNG tree not found: {root}")
    images, masks, ids = [], [], []
    for patient in sorted(os.listdir(root)):
        pdir = os.path.join(root, patient)
        if not os.path.isdir(pdir):
            continue
        for nodule in sorted(os.listdir(pdir)):
            ndir = os.path.join(pdir, nodule)
            img_dir = os.path.join(ndir, "images")
            if not os.path.isdir(img_dir):
                continue
            mask_dirs = sorted((int(m.group(1)), d) for d in os.listdir(ndir)
                               if (m := _MASK_RE.match(d)))
            if not mask_dirs:
                raise DataError(f"{ndir}: no mask-N folders")
            r = len(mask_dirs)
            if [i for i, _ in mask_dirs] != list(range(r)):
                raise DataError(f"{ndir}: mask folders must be mask-0..mask-{r - 1}, found "
                                f"{[d for _, d in mask_dirs]}")
            if num_raters is not None and r != num_raters:
                raise DataError(f"{ndir}: {r} raters but {num_raters} expected")
            if masks and r != masks[0].shape[0]:
                raise DataError(f"{ndir}: {r} raters, earlier nodules have {masks[0].shape[0]}")
            slices = sorted((int(m.group(1)), f) for f in os.listdir(img_dir)
                            if (m := _SLICE_RE.match(f)))
            for k, fname in slices:
                img = _read_png(os.path.join(img_dir, fname))
                ms = []
                for _, d in mask_dirs:
                    mpath = os.path.join(ndir, d, fname)
                    if not os.path.isfile(mpath):
                        raise DataError(f"mask file missing: {mpath}")
                    m = _read_png(mpath)
                    if m.shape != img.shape:
                        raise DataError(f"{mpath}: mask is {m.shape}, image is {img.shape}")
                    ms.append((m > 0).astype(np.uint8))
                if images and img.shape != images[0].shape[1:]:
                    raise DataError(f"{os.path.join(img_dir, fname)}: image is {img.shape}, "
                                    f"earlier images are {images[0].shape[1:]}")
                images.append(img[None])
                masks.append(np.stack(ms))
                ids.append(f"{patient}/{nodule}/slice-{k}")
    if not ids:
        raise DataError(f"{root}: no LIDC-IDRI-XXXX/nodule-N/images/slice-K.png files found")
    return MultiRaterSet(np.stack(images), np.stack(masks), ids, root)


def load_any(path: str, num_raters: Optional[int] = None) -> MultiRaterSet:
    """An .npz, a PNG tree, or several .npz files separated by commas (the parts written by
    `python3 -m training.parts`), concatenated in the order given."""
    if "," in path:
        parts = [load_any(p, num_raters) for p in path.split(",") if p]
        first = parts[0]
        for part in parts[1:]:
            if part.images.shape[1:] != first.images.shape[1:] or \
                    part.masks.shape[1:] != first.masks.shape[1:]:
                raise DataError(f"{part.source}: images {part.images.shape[1:]} / masks "
                                f"{part.masks.shape[1:]} differ from {first.source}'s "
                                f"{first.images.shape[1:]} / {first.masks.shape[1:]}")
        return MultiRaterSet(np.concatenate([p.images for p in parts]),
                             np.concatenate([p.masks for p in parts]),
                             [i for p in parts for i in p.ids], path)
    ds = load_png_tree(path, num_raters) if os.path.isdir(path) else load_npz(path)
    if num_raters is not None and ds.num_raters != num_raters:
        raise DataError(f"{path}: {ds.num_raters} raters but the config expects {num_raters}")
    return ds


def order_raters(masks: np.ndarray, order: str) -> np.ndarray:
    """'as-is' keeps the rater order; 'area' sorts each slice's masks by area, smallest first
    (stable, so equal areas keep their order) as the reference does for LIDC."""
    if order == "as-is":
        return masks
    if order != "area":
        raise ValueError(f"rater order must be 'area' or 'as-is', got {order!r}")
    areas = masks.reshape(masks.shape[0], masks.shape[1], -1).sum(axis=2)
    idx = np.argsort(areas, axis=1, kind="stable")
    return np.take_along_axis(masks, idx[:, :, None, None], axis=1)


def split_by_patient(ds: MultiRaterSet, val_fraction: float, seed: str = "dpersona"
                     ) -> Tuple[MultiRaterSet, MultiRaterSet]:
    """Deterministic split by SHA-256 of the patient id: all slices of a patient land together."""
    train_idx, val_idx = [], []
    for i, p in enumerate(ds.patients()):
        h = int(hashlib.sha256((seed + p).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val_idx if h < val_fraction else train_idx).append(i)
    if not train_idx or not val_idx:
        raise DataError(f"{ds.source}: split by patient left an empty side "
                        f"({len(train_idx)} train, {len(val_idx)} val rows)")
    return ds.subset(train_idx), ds.subset(val_idx)


def to_tensors(images: np.ndarray, masks: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 -> model input image/255 (the reference's LIDC mapping) and float masks."""
    return (torch.from_numpy(images.astype(np.float32) / 255.0),
            torch.from_numpy(masks.astype(np.float32)))


def shift_crops(images: np.ndarray, masks: np.ndarray, max_shift: int,
                rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray]:
    """Translate each crop (and its masks with it) by (dy, dx) drawn uniformly from
    [-max_shift, max_shift], filling the uncovered border by reflection. images [N,C,H,W],
    masks [N,R,H,W]; returns new arrays of the same shapes and dtypes."""
    if max_shift <= 0:
        return images, masks
    n, _, h, w = images.shape
    if max_shift >= min(h, w):
        raise ValueError(f"shift {max_shift} must be smaller than the crop {h}x{w}")
    out_i = np.empty_like(images)
    out_m = np.empty_like(masks)
    s = max_shift
    pad = ((0, 0), (s, s), (s, s))
    for k in range(n):
        dy, dx = rng.randint(-s, s + 1, size=2)
        img = np.pad(images[k], pad, mode="reflect")
        msk = np.pad(masks[k], pad, mode="reflect")
        out_i[k] = img[:, s - dy:s - dy + h, s - dx:s - dx + w]
        out_m[k] = msk[:, s - dy:s - dy + h, s - dx:s - dx + w]
    return out_i, out_m


def check_training_masks(ds: MultiRaterSet, role: str = "training") -> List[str]:
    """Refuse masks a model cannot learn from; return notes on what is unusual but usable.

    Every mask empty: an error (nothing to segment: wrong file, or masks lost in conversion).
    Slices where no rater drew anything, and raters who drew nothing in the whole set, are legal
    (LIDC has a few slices where every reader's outline is empty) and reported."""
    per = ds.masks.reshape(ds.masks.shape[0], ds.masks.shape[1], -1).max(axis=2)  # [N,R]
    if not per.any():
        raise DataError(f"{ds.source}: every {role} mask is empty ({len(ds)} slices x "
                        f"{ds.num_raters} raters): nothing to learn; wrong file?")
    notes = []
    empty_slices = np.flatnonzero(per.max(axis=1) == 0)
    if len(empty_slices):
        notes.append(f"{ds.source}: {len(empty_slices)} of {len(ds)} {role} slices have no rater "
                     f"outline (e.g. {ds.ids[empty_slices[0]]}); they teach 'no nodule here'")
    silent = [r for r in range(ds.num_raters) if not per[:, r].any()]
    if silent:
        notes.append(f"{ds.source}: rater(s) {silent} drew nothing in any {role} slice")
    return notes


def augment_crops(images: np.ndarray, masks: np.ndarray, flips: bool, rot90: bool,
                  gamma: float, rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray]:
    """Geometric augmentation applied identically to each crop and its masks, plus an optional
    intensity change that keeps the per-crop min-max normalisation of the inputs.

    flips: mirror left-right and up-down, each with probability 1/2; rot90: rotate by k x 90
    degrees, k uniform in 0..3 (together: all 8 symmetries of the square); gamma: map grey value
    g to 255 (g/255)^y with log(y) uniform in [-gamma, gamma]. CT crops here are min-max
    normalised per crop (0 and 255 are the crop's darkest and brightest values); a power curve
    keeps 0 and 255 and the order of grey values, so the input still is a min-max normalised crop,
    whereas shifting or scaling grey values would produce inputs the served model never sees."""
    if not (flips or rot90 or gamma > 0):
        return images, masks
    images = images.copy()
    masks = masks.copy()
    levels = np.arange(256, dtype=np.float64) / 255.0
    for k in range(images.shape[0]):
        img, msk = images[k], masks[k]
        if flips:
            if rng.randint(2):
                img, msk = img[:, :, ::-1], msk[:, :, ::-1]
            if rng.randint(2):
                img, msk = img[:, ::-1, :], msk[:, ::-1, :]
        if rot90:
            turns = int(rng.randint(4))
            img, msk = np.rot90(img, turns, axes=(1, 2)), np.rot90(msk, turns, axes=(1, 2))
        if gamma > 0:
            g = float(np.exp(rng.uniform(-gamma, gamma)))
            lut = np.clip(np.rint(255.0 * levels ** g), 0, 255).astype(np.uint8)
            img = lut[img]
        images[k], masks[k] = img, msk
    return images, masks
