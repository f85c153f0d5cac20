"""Tests for the theory chapters' data: synthetic generators and derived data sets."""
from __future__ import annotations

import itertools

import pytest
import torch

from fa_tutor.data import Dataset
from fa_tutor.data.subsets import class_subset, label_noise, noisy_mnist
from fa_tutor.data.synthetic import (measure_near_orthogonality, measure_orthogonal_separability,
                                     nearly_orthogonal, orthogonally_separable, teacher_student)


def brute_min_pair(x, ypm):
    """min over all pairs (j, k), j = k included, of y_j y_k ⟨x_j, x_k⟩ by a double loop."""
    x = x.double()
    return min(float(ypm[j] * ypm[k] * (x[j] @ x[k]))
               for j, k in itertools.product(range(len(x)), repeat=2))


# ----------------------------------------------------------------------------------------
# Synthetic generators
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma, noise", [(0.05, 1.0), (0.5, 3.0)])
def test_orthogonally_separable_achieves_gamma(gamma, noise):
    x, y, measured = orthogonally_separable(40, 10, gamma=gamma, noise=noise, seed=3)
    assert x.shape == (40, 10) and x.dtype == torch.float32
    assert set(y.tolist()) == {-1.0, 1.0} and int((y > 0).sum()) == 20  # balanced ±1
    assert measured >= gamma
    assert measured == pytest.approx(brute_min_pair(x, y.double()), rel=1e-9)
    assert measured < gamma * 1.01  # the construction is tight: some pair sits at γ


def test_orthogonally_separable_01_labels_and_reproducible():
    a = orthogonally_separable(20, 5, gamma=0.2, seed=1, labels="01")
    b = orthogonally_separable(20, 5, gamma=0.2, seed=1, labels="01")
    assert a.y.dtype == torch.int64 and set(a.y.tolist()) == {0, 1}
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert measure_orthogonal_separability(a.x, a.y) == pytest.approx(a.gamma)  # {0,1} → ±1
    assert not torch.equal(a.x, orthogonally_separable(20, 5, gamma=0.2, seed=2).x)
    with pytest.raises(ValueError, match="labels='pm'"):
        orthogonally_separable(20, 5, labels="pm")
    with pytest.raises(ValueError, match="gamma must be positive"):
        orthogonally_separable(20, 5, gamma=0.0)


def test_measure_orthogonal_separability_hand_case():
    x = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    y = torch.tensor([1.0, 1.0, -1.0])
    # pairs: ⟨x0,x1⟩=2, y0y2⟨x0,x2⟩=2, y1y2⟨x1,x2⟩=0.5, norms 4, 2, 1.25  → min 0.5
    assert measure_orthogonal_separability(x, y) == pytest.approx(0.5)
    assert measure_orthogonal_separability(x, torch.tensor([1, 1, 0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="±1 or"):
        measure_orthogonal_separability(x, torch.tensor([0, 1, 2]))


def test_nearly_orthogonal_measures_and_gamma():
    data = nearly_orthogonal(10, 10_000, seed=0)
    x = data.x.double()
    norms = [float(x[j] @ x[j]) for j in range(10)]
    overlaps = [abs(float(x[j] @ x[k])) for j, k in itertools.permutations(range(10), 2)]
    assert data.r_min2 == pytest.approx(min(norms), rel=1e-9)
    assert data.rho_max == pytest.approx(max(overlaps), rel=1e-9)
    assert data.gamma == pytest.approx(min(norms) / (10 * max(overlaps)), rel=1e-9)
    assert data.gamma > 1  # Def. 5.6 with γ > 1: R_min² ≥ γ n ρ_max
    assert data.r_min2 >= data.gamma * 10 * data.rho_max * (1 - 1e-12)
    assert set(data.y.tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="increase d"):
        nearly_orthogonal(30, 50, seed=0, min_gamma=1.0)


def test_measure_near_orthogonality_hand_case():
    x = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.1], [0.2, 0.0, 2.0]])
    stats = measure_near_orthogonality(x)
    assert stats.r_min2 == pytest.approx(4.01)
    assert stats.rho_max == pytest.approx(0.6)
    assert stats.gamma == pytest.approx(4.01 / (3 * 0.6))


def test_teacher_student():
    x, y, teacher = teacher_student(50, 4, hidden=8, out_features=3, task="classification", seed=0)
    assert x.shape == (50, 4) and y.dtype == torch.int64
    with torch.no_grad():
        assert torch.equal(y, teacher(x).argmax(1))
    x2, y2, _ = teacher_student(50, 4, hidden=8, out_features=3, task="classification", seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x, y, teacher = teacher_student(30, 4, noise=0.0, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(y, teacher(x))
    with pytest.raises(ValueError, match="task='ranking'"):
        teacher_student(10, 2, task="ranking")


# ----------------------------------------------------------------------------------------
# Label noise, class subsets, noisy MNIST
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.37, 1.0])
def test_label_noise_flips_exact_count_to_other_classes(fraction):
    y = torch.arange(1000) % 7
    noisy, flipped = label_noise(y, fraction, 7, seed=0)
    assert int(flipped.sum()) == round(fraction * 1000)
    assert bool((noisy[flipped] != y[flipped]).all())  # every flip lands on another class
    assert torch.equal(noisy[~flipped], y[~flipped])
    assert noisy.min() >= 0 and noisy.max() < 7
    assert torch.equal(y, torch.arange(1000) % 7)  # input untouched


def test_label_noise_reproducible_and_uniform_over_other_classes():
    y = torch.zeros(6000, dtype=torch.long)
    a, fa = label_noise(y, 0.5, 4, seed=3)
    b, fb = label_noise(y, 0.5, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(fa, fb)
    counts = torch.bincount(a[fa], minlength=4)
    assert counts[0] == 0 and (counts[1:] - 1000).abs().max() < 120  # ≈ 3000/3 each


def test_label_noise_errors():
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="fraction must be in"):
        label_noise(y, 1.5, 3)
    with pytest.raises(ValueError, match="num_classes must be"):
        label_noise(torch.zeros(3, dtype=torch.long), 0.5, 1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        label_noise(y, 0.5, 2)
    with pytest.raises(ValueError, match="integer class labels"):
        label_noise(y.float(), 0.5, 3)
    with pytest.raises(ValueError, match="either generator or seed"):
        label_noise(y, 0.5, 3, seed=1, generator=torch.Generator())


def toy_dataset(K=6, per_class=5):
    y = torch.arange(K).repeat_interleave(per_class)
    x = y.float()[:, None].repeat(1, 3)  # every feature = the original class id
    return Dataset("toy", x, y, x[::2].clone(), y[::2].clone(), K,
                   [f"c{i}" for i in range(K)], note="hand-made")


def test_class_subset_remaps_labels():
    ds = toy_dataset()
    sub = class_subset(ds, 3, seed=4)
    original = [int(c[1:]) for c in sub.classes]
    assert sub.num_classes == 3 and original == sorted(original) and len(set(original)) == 3
    for x, y in ((sub.x_train, sub.y_train), (sub.x_test, sub.y_test)):
        assert set(y.tolist()) == {0, 1, 2}
        # label j ↔ original class classes[j]: the features carry the original id
        assert torch.equal(x[:, 0].long(), torch.tensor(original)[y])
    assert len(sub.y_train) == 15 and len(sub.y_test) == sum(
        int((ds.y_test == c).sum()) for c in original)
    assert str(original) in sub.note and sub.name == "toy-3cls"
    assert class_subset(ds, 3, seed=4).classes == sub.classes  # seeded
    assert class_subset(ds, 6, seed=0).classes == ds.classes
    with pytest.raises(ValueError, match="k must be in 1..6"):
        class_subset(ds, 7)


def test_noisy_mnist_setting():
    from fa_tutor.data import load_dataset
    base = load_dataset("mnist5k")
    ds, flipped = noisy_mnist(n=4000, noise=0.2, seed=0, base=base, return_flipped=True)
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    assert ds.x_train.dtype == torch.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert int(flipped.sum()) == 800 and "Substituted" in ds.note
    # recover every digit's clean label from the pooled 5,000 by its pixels
    pool_x = torch.cat([base.x_train, base.x_test]).flatten(1)
    pool_y = torch.cat([base.y_train, base.y_test])
    clean = {row.numpy().tobytes(): int(lab) for row, lab in zip(pool_x, pool_y)}
    true_train = torch.tensor([clean[r.numpy().tobytes()] for r in ds.x_train])
    true_test = torch.tensor([clean[r.numpy().tobytes()] for r in ds.x_test])
    assert torch.equal(ds.y_test, true_test)  # the test set is clean
    assert torch.equal(flipped, ds.y_train != true_train)  # exactly the flipped ones differ
    train_keys = {r.numpy().tobytes() for r in ds.x_train}
    assert not any(r.numpy().tobytes() in train_keys for r in ds.x_test)  # disjoint
    other = noisy_mnist(n=4000, noise=0.2, seed=1, base=base)
    assert not torch.equal(other.y_train, ds.y_train)
    assert torch.equal(noisy_mnist(n=4000, noise=0.2, seed=0, base=base).y_train, ds.y_train)
    assert noisy_mnist(n=100, noise=0.0, seed=0, base=base).x_test.shape == (4900, 784)
    with pytest.raises(ValueError, match="n must be in"):
        noisy_mnist(n=5000, base=base)
    with pytest.raises(ValueError, match="base must be"):
        noisy_mnist(base=class_subset(base, 3))
