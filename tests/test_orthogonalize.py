"""Properties of ``zotheory.orthogonalize``: the polar factor and its Newton-Schulz approximations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zotheory.orthogonalize import (
    NS5_BAND,
    NS5_BAND_MIN_INPUT,
    NS5_COEFFICIENTS,
    as_matrix,
    orthogonalize,
)

SETTINGS = settings(max_examples=25, deadline=None)
dims = st.integers(min_value=1, max_value=8)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
log_scales = st.floats(min_value=-6.0, max_value=6.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


def _random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def _with_singular_values(m: int, n: int, s: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """U diag(s) V^T with Haar-random U (m x r), V (n x r), r = len(s)."""
    r = s.numel()
    U = _random_orthogonal(m, g)[:, :r]
    V = _random_orthogonal(n, g)[:, :r]
    return (U * s) @ V.T


def _identity(k: int) -> torch.Tensor:
    return torch.eye(k, dtype=torch.float64)


# ---------------------------------------------------------------- exact polar factor


@SETTINGS
@given(m=dims, n=dims, seed=seeds, log_scale=log_scales)
def test_exact_is_orthogonal_for_full_rank(m, n, seed, log_scale):
    A = _randn(m, n, seed=seed) * 10.0**log_scale
    Q = orthogonalize(A, "exact")
    assert Q.shape == A.shape and Q.dtype == A.dtype
    if m >= n:  # tall: orthonormal columns
        torch.testing.assert_close(Q.T @ Q, _identity(n), atol=1e-10, rtol=0)
    else:  # wide: orthonormal rows
        torch.testing.assert_close(Q @ Q.T, _identity(m), atol=1e-10, rtol=0)
    # the polar factor maximises <Q, A> over the spectral-norm ball: <Q, A> = ||A||_S1
    nuclear = torch.linalg.matrix_norm(A, ord="nuc")
    torch.testing.assert_close((Q * A).sum(), nuclear, rtol=1e-10, atol=0)


@SETTINGS
@given(m=dims, n=dims, seed=seeds)
def test_exact_equivariant_under_orthogonal_maps(m, n, seed):
    g = _gen(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64)
    U = _random_orthogonal(m, g)
    V = _random_orthogonal(n, g)
    torch.testing.assert_close(
        orthogonalize(U @ A @ V, "exact"), U @ orthogonalize(A, "exact") @ V, atol=1e-10, rtol=0
    )


@SETTINGS
@given(m=dims, n=dims, seed=seeds, log_scale=log_scales)
def test_exact_transpose_and_positive_scaling(m, n, seed, log_scale):
    A = _randn(m, n, seed=seed)
    Q = orthogonalize(A, "exact")
    torch.testing.assert_close(orthogonalize(A.T, "exact"), Q.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(orthogonalize(A * 10.0**log_scale, "exact"), Q, atol=1e-10, rtol=0)
    torch.testing.assert_close(orthogonalize(-A, "exact"), -Q, atol=1e-10, rtol=0)


@SETTINGS
@given(m=dims, n=dims, seed=seeds, data=st.data())
def test_exact_rank_deficient_is_partial_isometry_on_the_range(m, n, seed, data):
    r = data.draw(st.integers(min_value=0, max_value=min(m, n) - 1))
    g = _gen(seed)
    s = 1.0 + torch.rand(r, generator=g, dtype=torch.float64)
    A = _with_singular_values(m, n, s, g)
    Q = orthogonalize(A, "exact")
    assert torch.isfinite(Q).all()
    # U_r V_r^T: exactly r singular values equal to 1, the others 0
    sv = torch.linalg.svdvals(Q)
    torch.testing.assert_close(sv[:r], torch.ones(r, dtype=torch.float64), atol=1e-10, rtol=0)
    assert bool((sv[r:] < 1e-10).all())
    # Q^T A = V_r S_r V_r^T is symmetric PSD and Q maps nothing outside A's range
    P = Q.T @ A
    torch.testing.assert_close(P, P.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(Q @ Q.T @ A, A, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.trace(P), s.sum(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", ["exact", "ns3", "ns5"])
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (2, 3, 5), (1, 1)])
def test_zero_matrix_maps_to_zeros(method, shape):
    A = torch.zeros(shape, dtype=torch.float64)
    Q = orthogonalize(A, method, batch_dims=len(shape) - 2)
    assert torch.isfinite(Q).all()
    assert bool((Q == 0).all())


# ---------------------------------------------------------------- Newton-Schulz


@SETTINGS
@given(m=dims, n=dims, seed=seeds, log_scale=log_scales, data=st.data())
def test_ns3_converges_to_polar_factor_on_well_conditioned_input(m, n, seed, log_scale, data):
    # Condition number <= 3 and rank r <= 8 give normalised singular values
    # sigma_i / ||A||_F >= 1 / (3 sqrt(8)) > 0.117; K = 10 cubic steps take any
    # s >= 0.1 to within 3e-11 of 1, so the tolerance 1e-8 holds with room to spare.
    g = _gen(seed)
    r = min(m, n)
    cond = data.draw(st.floats(min_value=1.0, max_value=3.0))
    s = 1.0 + (cond - 1.0) * torch.rand(r, generator=g, dtype=torch.float64)
    A = _with_singular_values(m, n, s, g) * 10.0**log_scale
    torch.testing.assert_close(orthogonalize(A, "ns3"), orthogonalize(A, "exact"), atol=1e-8, rtol=0)
    # also equivariant under transposition
    torch.testing.assert_close(orthogonalize(A.T, "ns3"), orthogonalize(A, "ns3").T, atol=1e-12, rtol=0)


@SETTINGS
@given(m=dims, n=dims, seed=seeds, data=st.data())
def test_ns3_on_rank_deficient_input_tends_to_reduced_polar_factor(m, n, seed, data):
    r = data.draw(st.integers(min_value=1, max_value=min(m, n)))
    g = _gen(seed)
    s = 1.0 + 2.0 * torch.rand(r, generator=g, dtype=torch.float64)  # condition number <= 3
    A = _with_singular_values(m, n, s, g)
    Q = orthogonalize(A, "ns3")
    assert torch.isfinite(Q).all()
    torch.testing.assert_close(Q, orthogonalize(A, "exact"), atol=1e-8, rtol=0)


def test_ns3_step_count_follows_the_pseudocode():
    """steps=K returns A^K: K applications of the cubic map after Frobenius normalisation."""
    A = _randn(4, 6, seed=3)
    X = A / torch.linalg.matrix_norm(A)
    for K in range(1, 5):
        X = 1.5 * X - 0.5 * X @ X.T @ X
        torch.testing.assert_close(orthogonalize(A, "ns3", K), X, atol=1e-14, rtol=0)
    # default K = 10 (seed 003)
    torch.testing.assert_close(orthogonalize(A, "ns3"), orthogonalize(A, "ns3", 10), atol=0, rtol=0)


def test_ns5_matches_keller_jordan_iteration():
    a, b, c = NS5_COEFFICIENTS
    A = _randn(7, 3, seed=4)  # tall: computed on the transpose, as muon.py does
    X = A.T / torch.linalg.matrix_norm(A)
    for _ in range(5):
        G = X @ X.T
        X = a * X + (b * G + c * G @ G) @ X
    torch.testing.assert_close(orthogonalize(A, "ns5"), X.T, atol=1e-14, rtol=0)


def _expression_form(A: torch.Tensor, method: str, K: int) -> torch.Tensor:
    """The iterations written as the pseudocode's expressions (what the in-place loop replaced)."""
    X = A.to(torch.promote_types(A.dtype, torch.float32))
    transpose = X.shape[-2] > X.shape[-1]
    X = X.mT if transpose else X
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    X = X / torch.where(norm == 0, torch.ones_like(norm), norm)
    a, b, c = NS5_COEFFICIENTS
    for _ in range(K):
        if method == "ns3":
            X = 1.5 * X - 0.5 * X @ X.mT @ X
        else:
            G = X @ X.mT
            X = a * X + (b * G + c * G @ G) @ X
    return (X.mT if transpose else X).to(A.dtype)


@pytest.mark.parametrize("method", ["ns3", "ns5"])
@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (300, 40), (40, 300), (3, 6, 4), (1, 9), (0, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_in_place_iterations_give_the_bits_of_the_expression_form(method, shape, dtype):
    """The loop updates X in place (two X-sized buffers alive instead of four) with the same
    operations in the same order: bitwise the expression form, input untouched."""
    A = torch.randn(shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64).to(dtype)
    A0 = A.clone()
    got = orthogonalize(A, method, 3, batch_dims=len(shape) - 2)
    want = _expression_form(A, method, 3)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got.float(), want.float())
    assert torch.equal(A, A0)
    # overwrite_input=True: the same bits, computed in A's storage when A is in the compute dtype
    lent = A.clone()
    got = orthogonalize(lent, method, 3, batch_dims=len(shape) - 2, overwrite_input=True)
    assert torch.equal(got.float(), want.float())
    if dtype != torch.bfloat16 and A.numel() and shape[-2] <= shape[-1]:
        assert got.data_ptr() == lent.data_ptr()  # no new buffer for the iterate


@SETTINGS
@given(m=dims, n=dims, seed=seeds, log_scale=log_scales, data=st.data())
def test_ns5_singular_values_in_documented_band(m, n, seed, log_scale, data):
    r = min(m, n)
    g = _gen(seed)
    # singular values spread over [s_min, 1] relative to the largest; the normalised
    # values sigma_i / ||A||_F stay >= NS5_BAND_MIN_INPUT for the band to apply
    spread = data.draw(st.floats(min_value=0.0, max_value=1.0))
    s = 10.0 ** (-spread * torch.rand(r, generator=g, dtype=torch.float64))
    A = _with_singular_values(m, n, s, g) * 10.0**log_scale
    normalised = s / torch.linalg.vector_norm(s)
    assert bool((normalised >= NS5_BAND_MIN_INPUT).all())
    sv = torch.linalg.svdvals(orthogonalize(A, "ns5"))
    lo, hi = NS5_BAND
    assert bool((sv >= lo - 1e-9).all()) and bool((sv <= hi + 1e-9).all()), sv
    # and it is not the polar factor in general
    assert sv.shape == (r,)


def test_ns5_band_is_tight():
    """The band's ends are attained (so the documented numbers are measured, not loose)."""
    a, b, c = NS5_COEFFICIENTS
    s = torch.logspace(math.log10(NS5_BAND_MIN_INPUT), 0, 20001, dtype=torch.float64)
    for _ in range(5):
        s = a * s + b * s**3 + c * s**5
    lo, hi = NS5_BAND
    assert abs(s.min().item() - lo) < 1e-4 and abs(s.max().item() - hi) < 1e-4


@pytest.mark.parametrize("method", ["ns3", "ns5"])
@SETTINGS
@given(m=dims, n=dims, seed=seeds, data=st.data())
def test_newton_schulz_finite_on_rank_deficient_and_tiny_inputs(method, m, n, seed, data):
    r = data.draw(st.integers(min_value=0, max_value=min(m, n)))
    scale = data.draw(st.sampled_from([1e-300, 1e-30, 1.0, 1e30]))
    g = _gen(seed)
    A = _with_singular_values(m, n, torch.rand(r, generator=g, dtype=torch.float64) + 1e-3, g) * scale
    Q = orthogonalize(A, method)
    assert torch.isfinite(Q).all()
    assert torch.linalg.matrix_norm(Q, ord=2) <= 1.25  # never blows up (ns5 band top 1.2024)


# ---------------------------------------------------------------- batching, dtypes, validation


@pytest.mark.parametrize("method", ["exact", "ns3", "ns5"])
def test_batched_equals_per_matrix(method):
    A = _randn(3, 5, 4, seed=5)
    Q = orthogonalize(A, method, batch_dims=1)
    for b in range(3):
        torch.testing.assert_close(Q[b], orthogonalize(A[b], method), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["exact", "ns3", "ns5"])
def test_low_precision_dtypes_are_kept(method, dtype):
    A = _randn(6, 4, seed=6).to(dtype)
    Q = orthogonalize(A, method)
    assert Q.dtype == dtype and torch.isfinite(Q).all()


def test_validation_errors_name_the_argument():
    A = _randn(3, 4, seed=7)
    with pytest.raises(ValueError, match=r"method must be one of \['exact', 'ns3', 'ns5'\]"):
        orthogonalize(A, "ns7")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        orthogonalize(A, "ns3", 0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        orthogonalize(A, "ns5", 2.5)
    with pytest.raises(ValueError, match=r"A must have 2 dimension\(s\).*got shape \(3, 4\)"):
        orthogonalize(A, "exact", batch_dims=1)
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        orthogonalize(torch.ones(5), "ns3")


def test_as_matrix_rules():
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="rule='error'"):
        as_matrix(v)
    with pytest.raises(ValueError, match="rule must be one of"):
        as_matrix(v, "rows")
    col = as_matrix(v, "column")
    assert col.shape == (2, 1)
    torch.testing.assert_close(orthogonalize(col, "exact").reshape(-1), v / 5.0)
    w = _randn(4, 3, 2, 2, seed=8)  # a conv weight (out, in, kh, kw)
    assert as_matrix(w, "column").shape == (4, 12)
    assert as_matrix(w[0, 0], "error") is w[0, 0] or as_matrix(w[0, 0]).shape == (2, 2)
    assert as_matrix(torch.tensor(-2.0), "column").shape == (1, 1)
    assert as_matrix(_randn(5, 7, seed=9), "column", batch_dims=1).shape == (5, 7, 1)
