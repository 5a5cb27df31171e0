"""Shared fixtures: the real multi-rater data in ../shared/data (tests skip when it is absent,
and fail under CI=true, as the Go tests do) and one tiny run trained once per session."""
import os

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
LIDC_VAL = os.path.join(SHARED, "lidc", "lidc_val.npz")
QUBIQ = os.path.join(SHARED, "qubiq", "qubiq_brain_growth.npz")

torch.set_num_threads(1)


def require(path):
    if not os.path.exists(path):
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data missing under CI: {path}")
        pytest.skip(f"shared data not present: {path}")
    return path


@pytest.fixture(scope="session")
def lidc_val():
    from training.data import load_npz
    return load_npz(require(LIDC_VAL))


@pytest.fixture(scope="session")
def qubiq():
    from training.data import load_npz
    return load_npz(require(QUBIQ))


@pytest.fixture(scope="session")
def lidc_small(lidc_val):
    """Whole patients from the LIDC validation file: ~60 training and ~20 validation slices."""
    pats = lidc_val.patients()
    order = sorted(set(pats))
    train_p, val_p = set(order[:6]), set(order[6:9])
    train = lidc_val.subset([i for i, p in enumerate(pats) if p in train_p][:64])
    val = lidc_val.subset([i for i, p in enumerate(pats) if p in val_p][:16])
    return train, val


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, lidc_small):
    """tiny config, stage I then stage II, a few steps each on real LIDC slices."""
    from training.config import tiny
    from training.trainer import Trainer
    train, val = lidc_small
    cfg = tiny()
    cfg.images_per_epoch = 16
    cfg.val_limit = 8
    run = str(tmp_path_factory.mktemp("tiny-run"))
    trainer = Trainer(cfg, run, train, val, device="cpu", progress=False, log=lambda m: None)
    s1 = trainer.train(1)
    s2 = trainer.train(2)
    return {"dir": run, "cfg": cfg, "stage1": s1, "stage2": s2, "trainer": trainer}
