"""Seeded directions (zotheory.directions) and coordinate draws (zotheory.random)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory.directions import generate_directions, iter_directions
from zotheory.random import make_generator, sample_coordinates

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64])
seeds = st.integers(0, 2**31 - 1)


# --------------------------------------------------------------------------- sample_coordinates


@settings(max_examples=40, deadline=None)
@given(numel=st.integers(1, 10**8), seed=seeds, batch=st.lists(st.integers(1, 3), max_size=2).map(tuple))
def test_k1_is_exactly_randint(numel, seed, batch):
    got = sample_coordinates(numel, 1, make_generator(seed), batch)
    want = torch.randint(0, numel, (*batch, 1), generator=make_generator(seed))
    assert torch.equal(got, want)


@settings(max_examples=60, deadline=None)
@given(numel=st.integers(2, 200), data=st.data(), seed=seeds, batch=st.lists(st.integers(1, 3), max_size=2).map(tuple))
def test_k_distinct_in_range_and_deterministic(numel, data, seed, batch):
    k = data.draw(st.integers(1, numel))
    a = sample_coordinates(numel, k, make_generator(seed), batch)
    b = sample_coordinates(numel, k, make_generator(seed), batch)
    assert a.shape == (*batch, k) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert bool((a >= 0).all()) and bool((a < numel).all())
    flat = a.reshape(-1, k)
    for row in flat:
        assert row.unique().numel() == k


def test_huge_numel_no_permutation():
    idx = sample_coordinates(10**9, 64, make_generator(0), (4,))
    assert idx.shape == (4, 64)
    assert all(r.unique().numel() == 64 for r in idx)


@pytest.mark.parametrize("numel,k", [(10, 3), (10, 7)])  # rejection branch and dense branch
def test_marginals_uniform(numel, k):
    """Each index appears with probability k/numel; counts within 5 binomial std errors."""
    runs = 4000
    idx = sample_coordinates(numel, k, make_generator(1), (runs,))
    counts = torch.bincount(idx.reshape(-1), minlength=numel).double()
    p = k / numel
    mean, sd = runs * p, math.sqrt(runs * p * (1 - p))
    assert bool(((counts - mean).abs() <= 5 * sd).all()), counts


def test_sample_coordinates_bad_arguments():
    g = make_generator(0)
    with pytest.raises(ValueError, match="k"):
        sample_coordinates(5, 0, g)
    with pytest.raises(ValueError, match="k"):
        sample_coordinates(5, 6, g)
    with pytest.raises(ValueError, match="numel"):
        sample_coordinates(0, 1, g)
    with pytest.raises(ValueError, match="generator"):
        sample_coordinates(5, 2, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        make_generator(-1)


# --------------------------------------------------------------------------- directions


@settings(max_examples=40, deadline=None)
@given(
    shape_list=st.lists(shapes, min_size=1, max_size=3),
    dtype=dtypes,
    seed=seeds,
    dist=st.sampled_from(["gaussian", "rademacher", "sphere"]),
)
def test_same_seed_same_directions(shape_list, dtype, seed, dist):
    params = [torch.zeros(s, dtype=dtype) for s in shape_list]
    a = generate_directions(params, seed, dist)
    b = generate_directions(params, seed, dist)
    c = list(iter_directions(params, seed, dist))
    cdt = torch.promote_types(dtype, torch.float32)
    for p, za, zb, zc in zip(params, a, b, c):
        assert za.shape == p.shape and za.dtype == cdt
        assert torch.equal(za, zb) and torch.equal(za, zc)
    if dist == "rademacher":
        assert all(bool((z.abs() == 1).all()) for z in a)
    if dist == "sphere":
        norm = math.sqrt(sum(float(z.double().pow(2).sum()) for z in a))
        assert abs(norm - 1) < 1e-6


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 4), event=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple), seed=seeds)
def test_sphere_batched_per_row_norm(batch, event, seed):
    x = torch.zeros((batch, *event), dtype=torch.float64)
    (z,) = generate_directions([x], seed, "sphere", batch_dims=1)
    norms = z.reshape(batch, -1).norm(dim=-1)
    assert torch.allclose(norms, torch.ones(batch, dtype=torch.float64), atol=1e-12)


def test_gaussian_first_tensor_is_fresh_generator_draw():
    x = torch.zeros(3, 4)
    (z,) = generate_directions([x], 7, "gaussian")
    want = torch.randn((3, 4), generator=make_generator(7))
    assert torch.equal(z, want)


def test_directions_bad_arguments():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="distribution"):
        generate_directions([x], 0, "uniform")
    with pytest.raises(ValueError, match="seed"):
        generate_directions([x], -3, "gaussian")
    with pytest.raises(ValueError, match="batch_dims"):
        generate_directions([x, torch.zeros(4, 2)], 0, "gaussian", batch_dims=1)
