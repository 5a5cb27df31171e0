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
    if masks.size and masks.max() > 1:
        raise DataError(f"{source}: masks must be 0/1, found value {int(masks.max())}")


def load_npz(path: str, ids_path: Optional[str] = None) -> MultiRaterSet:
    """Load `images` [N,H,W] or [N,C,H,W] uint8 and `masks` [N,R,H,W]; ids from `<stem>.ids.txt`."""
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path) as z:
            if "images" not in z or "masks" not in z:
                raise DataError(f"{path}: needs arrays 'images' and 'masks', has {sorted(z.files)}")
            images = np.asarray(z["images"])
            masks = np.asarray(z["masks"])
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
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
