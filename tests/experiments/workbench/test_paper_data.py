"""The papers' data sets: each rule checked on a synthetic CIFAR fixture (always) and by hash on the real files.

The real CIFAR-10 batches are looked for in $DRIFTLAB_CIFAR10 (no file: those tests are skipped; nothing downloads).
"""
import hashlib
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from models import write_cifar_batches

from experiments.zoo import catalog, papers
from experiments.zoo.mnist1d import mnist1d

CIFAR_ROOT = os.environ.get("DRIFTLAB_CIFAR10")
REAL = pytest.mark.skipif(not CIFAR_ROOT or not all((Path(CIFAR_ROOT) / f).is_file() for f in papers.CIFAR_FILES),
                          reason="no CIFAR-10 python batches in $DRIFTLAB_CIFAR10")
# MNIST-1D as the mnist1d package (0.0.2.post1) makes it with its defaults; equal to 0.0 there (see the parity test).
# The labels are pinned bit for bit; the signals to 1e-12, because their last bits move with NumPy's summation
# (NumPy 2.2 and 2.3+ give different SHA-256 of the same draws, both equal to the package under that NumPy).
MNIST1D_LABELS_SHA256 = "6feec4a017698c7f"
MNIST1D_ABS_SUM, MNIST1D_COS_SUM = 148316.17264806535, 445.71845196597246
MNIST1D_ENTRIES = ((0, 0, -0.33200567), (1234, 17, 0.4923464), (4999, 39, 1.19315184))


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return write_cifar_batches(tmp_path_factory.mktemp("cifar") / "batches", per_batch=40)


def _raw(root):
    x_tr, l_tr, x_te, l_te = papers.read_cifar10(root)
    return torch.from_numpy(x_tr).double(), l_tr, torch.from_numpy(x_te).double(), l_te


def test_reading_keeps_file_order_and_hwc_layout(fixture_root):
    import pickle

    x_tr, l_tr, _, _ = papers.read_cifar10(fixture_root)
    with open(fixture_root / "data_batch_2", "rb") as fh:
        second = pickle.load(fh, encoding="bytes")
    row = second[b"data"][3]  # the 4th image of batch 2: planes R, G, B of 1024 pixels each
    assert x_tr.shape == (200, 32, 32, 3) and l_tr[43] == second[b"labels"][3]
    np.testing.assert_array_equal(x_tr[43, :, :, 1].ravel(), row[1024:2048])


def test_cohen_takes_the_first_n_standardized_by_all_training_images(fixture_root):
    data = papers.cifar_cohen(fixture_root, n=30)
    x_tr, l_tr, x_te, _ = _raw(fixture_root)
    pixels = x_tr / 255
    mean, std = pixels.mean(0), (pixels - pixels.mean(0)).std(0, unbiased=False)  # over all 200, not the 30
    expected = ((pixels[:30] - mean) / std).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(data.x_train, expected, rtol=0, atol=1e-6)  # float64 sums in another order
    assert data.x_train.dtype == torch.float32
    assert torch.equal(data.y_train, torch.from_numpy(l_tr[:30])) and len(data.x_test) == len(x_te)
    torch.testing.assert_close(data.x_test, ((x_te / 255 - mean) / std).permute(0, 3, 1, 2).float(), rtol=0,
                               atol=1e-6)


def test_central_flows_takes_the_first_per_class_of_the_first_classes_then_shuffles(fixture_root):
    data = papers.cifar_central_flows(fixture_root, n=12, classes=3)
    x_tr, l_tr, _, l_te = _raw(fixture_root)
    chosen = np.concatenate([np.nonzero(l_tr == c)[0][:4] for c in range(3)])
    order = np.random.default_rng(0).permutation(12)
    assert torch.equal(data.y_train, torch.from_numpy(l_tr[chosen][order]))
    mean = torch.tensor([0.49139968, 0.48215827, 0.44653124], dtype=torch.float64) * 255
    std = torch.tensor([0.24703233, 0.24348505, 0.26158768], dtype=torch.float64) * 255
    expected = ((x_tr[chosen][order] - mean) / std).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(data.x_train, expected, rtol=0, atol=1e-6)
    assert sorted(data.y_test.tolist()) == sorted(int(v) for v in l_te if v < 3)
    assert data.num_classes == 3


def test_eoss_takes_a_seeded_choice_with_its_constants(fixture_root):
    data = papers.cifar_eoss(fixture_root, n=25, seed=888)
    x_tr, l_tr, _, _ = _raw(fixture_root)
    idx = np.random.default_rng(888).choice(200, 25, replace=False)
    expected = ((x_tr[idx] / 255 - torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64))
                / torch.tensor([0.2023, 0.1994, 0.2010], dtype=torch.float64)).permute(0, 3, 1, 2)
    torch.testing.assert_close(data.x_train.double(), expected, rtol=0, atol=1e-5)  # float32 arithmetic there
    assert torch.equal(data.y_train, torch.from_numpy(l_tr[idx]))


def test_presets_name_the_missing_files_and_need_a_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing \['data_batch_1'.*nothing downloads"):
        catalog.paper_data(f"cohen-5k:{tmp_path}")
    with pytest.raises(ValueError, match="cohen-5k:PATH"):
        catalog.paper_data("cohen-5k")
    with pytest.raises(ValueError, match="did you mean 'circles'"):
        catalog.paper_data("circels")


@REAL
@pytest.mark.parametrize("name", list(papers.CIFAR_PRESETS))
def test_presets_on_the_real_files(name):
    data = catalog.paper_data(f"{name}:{CIFAR_ROOT}")
    sizes = {"cohen-5k": (5000, 10000), "cf-1k-4class": (1000, 4000), "eoss-seeded": (8192, 10000)}
    assert (len(data.x_train), len(data.x_test)) == sizes[name]
    print(f"{name}: sha256 {data.sha256()}")  # recorded in docs/data.md by whoever has the files


def test_generated_sets_follow_their_rules():
    cheb = papers.chebyshev(5, 20)
    x = cheb.x_train[:, 0].double()
    torch.testing.assert_close(cheb.y_train[:, 0].double(), torch.cos(5 * torch.arccos(x.clamp(-1, 1))),
                               rtol=0, atol=1e-5)  # T_5(cos t) = cos 5t
    lin = papers.deep_linear(50, 50)
    torch.testing.assert_close(lin.x_train.T @ lin.x_train, 50 * torch.eye(50), rtol=0, atol=1e-3)
    for make, second in ((papers.sorting, np.sort), (papers.copying, lambda a, axis: a)):
        seq = make()
        full = torch.cat([seq.x_train, seq.y_train[:, -1:]], dim=1).numpy()  # the 16 tokens
        np.testing.assert_array_equal(full[:, 8:], second(full[:, :8], axis=1))
        assert (seq.y_train[:, :7] == -1).all() and seq.x_train.shape == (1000, 15)
    moons = papers.moons()
    assert moons.x_train.shape == (200, 2) and set(moons.y_train.tolist()) == {0, 1}


def test_mnist1d_is_the_packages_data_set():
    data = mnist1d()
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    x = torch.cat([data.x_train, data.x_test]).numpy()
    labels = torch.cat([data.y_train, data.y_test]).numpy().astype(np.int64)
    assert hashlib.sha256(labels.tobytes()).hexdigest().startswith(MNIST1D_LABELS_SHA256)
    weights = np.cos(np.arange(x.size)).reshape(x.shape)  # a checksum that sees every entry and its place
    assert np.abs(x).sum() == pytest.approx(MNIST1D_ABS_SUM, rel=1e-12, abs=0)
    assert (x * weights).sum() == pytest.approx(MNIST1D_COS_SUM, rel=1e-11, abs=0)
    for row, col, value in MNIST1D_ENTRIES:
        assert x[row, col] == pytest.approx(value, abs=1e-8)
    assert abs(float(torch.cat([data.x_train, data.x_test]).mean())) < 1e-12


def test_mnist1d_parity_with_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "requests", sys.modules.get("requests", types.ModuleType("requests")))
    package = pytest.importorskip("mnist1d.data")
    theirs = package.make_dataset(package.get_dataset_args())
    ours = mnist1d()
    np.testing.assert_array_equal(ours.x_train.numpy(), theirs["x"])
    np.testing.assert_array_equal(ours.y_test.numpy(), theirs["y_test"])
