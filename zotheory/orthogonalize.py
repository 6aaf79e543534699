"""Orthogonalization of matrices: the polar factor ``U V^T`` and its Newton-Schulz approximations.

``orthogonalize(A, method, steps, batch_dims=...)`` maps ``A`` of shape ``(*batch, m, n)``
to a matrix of the same shape. Three methods, selectable and recorded with every result:

``"exact"`` -- the polar factor from the thin SVD ``A = U S V^T``
    (``torch.linalg.svd(full_matrices=False)``). This is what the proof of Theorem 2
    uses (draft appendix, Lemma C.2: ``U_M V_M^T``), so it is the theory default.
    *Rank-deficient input*: the result is ``U_r V_r^T`` over the singular values
    ``s_i > rtol * s_max`` with ``rtol = max(m, n) * eps(dtype)`` (NumPy's
    ``matrix_rank`` tolerance; ``eps`` of the compute dtype). Directions with (numerically)
    zero singular value are dropped, not given an arbitrary orthonormal completion:
    this is the matrix analogue of ``sign(0) = 0``, it is unique (the full polar
    factor of a singular matrix is not), and it is the limit of the Newton-Schulz
    iterations below, which map a zero singular value to zero. A zero matrix maps to
    the zero matrix.

``"ns3"`` -- exactly the ``Newton_Schulz`` subroutine of the paper's Algorithm 2
    (seed 003)::

        Subroutine Newton_Schulz(A in R^{m x n}, K = 10):
            A^0 <- A / ||A||_F
            for k = 0 to K do
                A^{k+1} <- 3/2 A^k - 1/2 A^k (A^k)^T A^k
            end for
            Return A^K  ~  U_A V_A^T

    The pseudocode's loop runs to ``A^{K+1}`` but returns ``A^K``; the returned value is
    the result of ``K`` iterations, and that is what ``steps=K`` computes (the last,
    discarded iteration is not performed). Default ``K = 10`` as in seed 003; the public
    LaTeX draft's Algorithm 2 writes ``K = 5`` -- seed 003 governs. The cubic map
    ``s -> 1.5 s - 0.5 s^3`` sends every singular value in ``(0, sqrt(3))`` to 1 (and
    Frobenius normalisation puts them all in ``(0, 1]``), but small ones slowly: a
    normalised singular value ``s`` grows by at most 1.5 per step, so with ``K = 10``
    ``s >= 0.1`` is within ``3e-11`` of 1 while ``s = 0.05`` is still ``5e-4`` away.

``"ns5"`` -- the quintic iteration of Keller Jordan's Muon (``muon.py``,
    ``zeropower_via_newtonschulz5``) and of the seed-004 draft::

        X_0 = A / ||A||_F;   X_{k+1} = a X_k + b (X_k X_k^T) X_k + c (X_k X_k^T)^2 X_k,
        (a, b, c) = (3.4445, -4.7750, 2.0315),   default 5 steps.

    It does *not* converge to ``U V^T``: the coefficients trade accuracy for speed on
    small singular values, and the singular values end in a band around 1.
    **Measured band** (iterating the scalar map on a grid of 2e5 log-spaced points
    and checked on random matrices in ``tests/test_orthogonalize.py``): with 5 steps
    every normalised singular value ``s = sigma_i / ||A||_F >= 0.01`` ends in
    ``[0.6818, 1.1344]``; ``s in [0.002, 0.01)`` ends in ``[0.6818, 1.2024]``;
    smaller ones have not yet grown (the map's slope at 0 is ``a``, so 5 steps
    multiply a tiny ``s`` by ``a^5 ~ 487``). More steps do not shrink the band:
    ``[0.6818, 1.1344]`` is the map's attracting interval (also after 50 steps).
    Zero singular values stay zero.

Numerical choices shared by ``ns3`` and ``ns5`` (none changes the algorithm):

* Computation in ``torch.promote_types(A.dtype, torch.float32)`` (float64 stays
  float64; bf16/fp16 inputs are computed in float32 and cast back). Keller Jordan's
  code runs the quintic in bf16; we do not.
* A zero matrix returns zeros: ``A / ||A||_F`` would be ``0/0``; we divide by 1
  instead, and the iteration maps 0 to 0. This is a numerical guard, not a change
  of the algorithm (Keller Jordan adds ``1e-7`` to the norm instead, which changes
  every output slightly; we use the exact Frobenius norm).
* When ``m > n`` the iteration runs on ``A^T`` and transposes back, as
  ``muon.py`` does, so the Gram matrix ``X X^T`` is ``n x n`` (the smaller one). In
  exact arithmetic this is the same iterate (each step commutes with transposition:
  ``(X^T)(X^T)^T X^T = (X X^T X)^T``); in floating point it changes the rounding only.

Non-matrix parameters
---------------------
Orthogonalization is defined for matrices only. :func:`as_matrix` states the rule
for other tensors explicitly, and callers (the kernels' list steps) must choose one:

* ``rule="error"`` (default): any tensor that is not 2-D raises ``ValueError``.
* ``rule="column"``: a 1-D tensor of length ``d`` is viewed as a ``(d, 1)`` column,
  so its polar factor is ``v / ||v||_2`` (and ``0`` for ``v = 0``); a 0-d tensor is
  viewed as ``(1, 1)`` (polar factor ``sign``); a tensor with more than two dimensions
  is viewed as ``(shape[0], -1)`` -- Keller Jordan's convention for convolution
  weights ``(out, in, kh, kw) -> (out, in*kh*kw)``. 2-D tensors are returned unchanged.
"""

from __future__ import annotations

import torch

from ._checks import check_choice, check_int_at_least, check_tensor_rank

METHODS = ("exact", "ns3", "ns5")
DEFAULT_STEPS = {"ns3": 10, "ns5": 5}
NS5_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
#: Measured range of the singular values after ``ns5`` with 5 steps, for normalised
#: singular values ``sigma_i / ||A||_F >= NS5_BAND_MIN_INPUT`` (see the module doc).
NS5_BAND = (0.6818, 1.1344)
NS5_BAND_MIN_INPUT = 0.01
AS_MATRIX_RULES = ("error", "column")


def orthogonalize(
    A: torch.Tensor,
    method: str = "exact",
    steps: int | None = None,
    *,
    batch_dims: int = 0,
    overwrite_input: bool = False,
) -> torch.Tensor:
    """Orthogonalize the last two dimensions of ``A`` (shape ``(*batch, m, n)``).

    Parameters
    ----------
    A:
        Tensor with exactly two dimensions after ``batch_dims`` leading batch dimensions.
    method:
        ``"exact"`` (SVD polar factor), ``"ns3"`` (the pseudocode's cubic Newton-Schulz)
        or ``"ns5"`` (Keller Jordan's quintic). See the module docstring.
    steps:
        Newton-Schulz iterations (an integer >= 1); ``None`` means the method's
        default (10 for ``ns3``, 5 for ``ns5``). Ignored by ``"exact"`` (but still
        validated when given).
    batch_dims:
        Number of leading batch dimensions; every matrix is orthogonalized on its own.
    overwrite_input:
        ``True`` lets Newton-Schulz normalise ``A`` in place and iterate in its storage when
        ``A`` is already in the compute dtype (one ``A``-sized buffer less; the result is
        bitwise the same). For a temporary the caller does not read again, e.g. ZO-Muon's
        ``scale * z``. ``A``'s values are then unspecified. Ignored by ``"exact"``.

    Returns
    -------
    Tensor of the shape and dtype of ``A``.
    """
    method = check_choice("method", method, METHODS)
    batch_dims = check_int_at_least("batch_dims", batch_dims, 0)
    check_tensor_rank("A", A, 2, batch_dims=batch_dims)
    if steps is not None:
        steps = check_int_at_least("steps", steps, 1)
    if A.is_complex():
        raise ValueError(f"A must be a real tensor, got dtype {A.dtype}")

    compute_dtype = torch.promote_types(A.dtype, torch.float32)
    X = A.to(compute_dtype)
    if method == "exact":
        out = _polar_exact(X)
    else:
        K = DEFAULT_STEPS[method] if steps is None else steps
        owned = X is not A or bool(overwrite_input)  # .to made a copy, or the caller lends A
        out = _newton_schulz(X, method, K, owned)
    return out.to(A.dtype)


def _polar_exact(X: torch.Tensor) -> torch.Tensor:
    m, n = X.shape[-2], X.shape[-1]
    if X.numel() == 0:
        return X.clone()
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    rtol = max(m, n) * torch.finfo(X.dtype).eps
    s_max = S.amax(dim=-1, keepdim=True)
    keep = S > rtol * s_max  # all False for a zero matrix (0 > 0), so it maps to 0
    return (U * keep.unsqueeze(-2).to(X.dtype)) @ Vh


def _newton_schulz(X: torch.Tensor, method: str, K: int, owned: bool = False) -> torch.Tensor:
    """``owned``: X is a temporary of the caller's, free to normalise in place (same bits as ``X / norm``)."""
    transpose = X.shape[-2] > X.shape[-1]
    if transpose:
        X = X.mT
    norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    # Numerical guard: a zero matrix has ||A||_F = 0; dividing by 1 keeps it zero,
    # and both iterations map 0 to 0.
    divisor = torch.where(norm == 0, torch.ones_like(norm), norm)
    X = X.div_(divisor) if owned else X / divisor  # from here on X is ours to overwrite
    # The iterations below are ``X <- 1.5 X - 0.5 X X^T X`` (ns3) and ``X <- a X + (b G + c G G) X``
    # (ns5), written with the same operations in the same order as those expressions (so the same
    # bits) but updating X in place: at most two X-sized buffers are alive at once (X and the
    # product), where the expression form holds four (1.5 X, 0.5 X, the product, the result).
    # For a 50272 x 2048 embedding in float32 that is 0.77 GB less.
    if method == "ns3":
        for _ in range(K):
            P = (0.5 * X) @ X.mT @ X
            X.mul_(1.5).sub_(P)
            del P
    else:
        a, b, c = NS5_COEFFICIENTS
        for _ in range(K):
            G = X @ X.mT
            P = (b * G + c * G @ G) @ X
            X.mul_(a).add_(P)
            del G, P
    return X.mT if transpose else X


def as_matrix(t: torch.Tensor, rule: str = "error", *, batch_dims: int = 0) -> torch.Tensor:
    """View a parameter as a matrix for orthogonalization (see "Non-matrix parameters").

    Returns a view of ``t`` (or a reshaped copy when ``t`` is not contiguous) of shape
    ``(*batch, r, c)``. 2-D event shapes are returned unchanged under both rules.
    """
    rule = check_choice("rule", rule, AS_MATRIX_RULES)
    batch_dims = check_int_at_least("batch_dims", batch_dims, 0)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < batch_dims:
        raise ValueError(
            f"t must have at least batch_dims={batch_dims} dimensions, got shape {tuple(t.shape)}"
        )
    batch = tuple(t.shape[:batch_dims])
    event = tuple(t.shape[batch_dims:])
    if len(event) == 2:
        return t
    if rule == "error":
        raise ValueError(
            f"t must be a matrix (2 dimensions after {batch_dims} batch dimension(s)) under "
            f"rule='error', got shape {tuple(t.shape)}; use rule='column' to view it as a matrix"
        )
    if len(event) == 0:
        return t.reshape(*batch, 1, 1)
    if len(event) == 1:
        return t.reshape(*batch, event[0], 1)
    return t.reshape(*batch, event[0], -1)
