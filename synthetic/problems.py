"""Synthetic problems whose constants are known exactly.

Every problem is a deterministic smooth function ``f`` on an *event* shape
``(d,)`` or ``(m, n)`` with closed-form ``value`` and ``grad`` (no autograd),
vectorised over any number of leading batch dimensions: ``x`` of shape
``(*batch, *shape)`` gives ``value(x)`` of shape ``batch`` and ``grad(x)`` of
the shape of ``x``. The constants the theorems need are exact numbers:

=================  ==========================================================
``L``              the Lipschitz constant of ``grad f`` in the l2 / Frobenius
                   norm, i.e. ``sup_x ||Hess f(x)||_op`` (attained, see each class)
``f_star``         ``inf f`` (attained at ``minimiser``)
``x0``             the fixed initial point: ``minimiser + x0_scale * z``,
                   ``z ~ N(0, I)`` from ``torch.Generator().manual_seed(seed)``
``delta0``         ``f(x0) - f_star``
``grad0_norm2``    ``||grad f(x0)||_2`` (Frobenius for matrices)
=================  ==========================================================

Computation follows ``x``'s dtype and device (the stored constants are float64
and are cast to ``x``); the constants above are computed in float64.

Families
--------
* :class:`SeparableCosine` / :class:`EntrywiseCosineMatrix`:
  ``phi(t) = a/2 t^2 + b (1 - cos(w t))`` summed over (rotated) coordinates;
  ``L = a + b w^2``; ``f* = 0`` at 0; non-convex when ``b w^2 > a``.
* :class:`KinkedQuadratic`: convex, ``C^{1,1}``, per coordinate ``L/2 t^2``
  (``t >= 0``) and ``eps L/2 t^2`` (``t < 0``); central differences are biased
  and a sign method driven by them stalls at ``|phi'| = c(eps) L tau``.
* :class:`CauchyRegression`: non-convex robust regression with noise-free
  labels; ``L = lambda_max(A^T A) / n`` (attained at the minimiser), ``f* = 0``.
* :class:`MatrixSensing`: least squares on a Gaussian sensing operator with a
  rank-``r`` ground truth; ``L = lambda_max(M^T M) / p``, ``f* = 0``.

:func:`nuclear_norm` is the batched Schatten-1 norm used for Theorem 2's metric.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from zotheory._checks import (
    check_in_range,
    check_int_at_least,
    check_nonnegative,
    check_positive,
)

__all__ = [
    "Problem",
    "SeparableCosine",
    "EntrywiseCosineMatrix",
    "KinkedQuadratic",
    "CauchyRegression",
    "MatrixSensing",
    "nuclear_norm",
]

_DTYPE = torch.float64


# ----------------------------------------------------------------------------- helpers


def _number(name: str, value: object) -> float:
    """Problem parameters are plain Python numbers (not per-run tensors)."""
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real Python number, got {value!r}")
    return float(value)


def _seed(value: object) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or int(value) < 0:
        raise ValueError(f"seed must be an integer >= 0, got {value!r}")
    return int(value)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _haar_orthogonal(k: int, generator: torch.Generator) -> Tensor:
    """A Haar-distributed k x k orthogonal matrix (QR of a Gaussian, signs fixed)."""
    g = torch.randn(k, k, generator=generator, dtype=_DTYPE)
    q, r = torch.linalg.qr(g)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs  # scales column j by signs[j]


def _like(t: Tensor, x: Tensor) -> Tensor:
    """Constant ``t`` in ``x``'s dtype / device (a no-op in the float64 CPU testbed)."""
    if t.dtype == x.dtype and t.device == x.device:
        return t
    return t.to(dtype=x.dtype, device=x.device)


def _largest_eigenvalue_of_gram(M: Tensor) -> float:
    """``lambda_max(M^T M) = lambda_max(M M^T)``, from the smaller of the two Grams."""
    gram = M.T @ M if M.shape[1] <= M.shape[0] else M @ M.T
    return float(torch.linalg.eigvalsh(gram)[-1])


def nuclear_norm(G: Tensor) -> Tensor:
    """Nuclear (Schatten-1) norm ``sum_i sigma_i(G)`` over the last two dims; batched.

    ``G`` of shape ``(*batch, m, n)`` gives a tensor of shape ``batch``.
    """
    if not isinstance(G, torch.Tensor) or G.ndim < 2:
        got = tuple(G.shape) if isinstance(G, torch.Tensor) else type(G).__name__
        raise ValueError(f"G must be a tensor with at least 2 dimensions (*batch, m, n), got {got}")
    return torch.linalg.matrix_norm(G, ord="nuc")


# ----------------------------------------------------------------------------- base class


class Problem(ABC):
    """A deterministic test function with exactly known constants (see the module doc).

    Subclasses implement :meth:`_value` and :meth:`_grad` on validated input and
    call :meth:`_finish_init` at the end of their constructor.

    Attributes: ``name``, ``shape`` (event shape), ``d`` (numel), ``m``, ``n``
    (``None`` for vector problems), ``L``, ``f_star``, ``minimiser``, ``x0``,
    ``delta0``, ``grad0_norm2``, ``is_matrix``. ``x0`` and ``minimiser`` return
    fresh copies, so callers may modify them in place.
    """

    name: str = "problem"

    def __init__(self, shape: tuple[int, ...], L: float, f_star: float) -> None:
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.L: float = float(L)
        self.f_star: float = float(f_star)

    # -- the function -----------------------------------------------------------------

    @abstractmethod
    def _value(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def _grad(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def _parameters(self) -> dict[str, Any]:
        """Family parameters for :meth:`constants`."""

    def value(self, x: Tensor) -> Tensor:
        """``f(x)``; ``x`` of shape ``(*batch, *shape)`` gives shape ``batch``."""
        self._check_x(x)
        return self._value(x)

    def grad(self, x: Tensor) -> Tensor:
        """``grad f(x)``, shaped like ``x``."""
        self._check_x(x)
        return self._grad(x)

    def batch_shape(self, x: Tensor) -> torch.Size:
        """The leading batch dimensions of ``x``."""
        self._check_x(x)
        return x.shape[: x.ndim - len(self.shape)]

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        k = len(self.shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k :]) != self.shape:
            raise ValueError(
                f"x must have shape (*batch, {', '.join(map(str, self.shape))}) for {self.name}, "
                f"got {tuple(x.shape)}"
            )

    # -- constants --------------------------------------------------------------------

    def _finish_init(self, minimiser: Tensor, x0: Tensor) -> None:
        self._minimiser = minimiser.to(_DTYPE).contiguous()
        self._x0 = x0.to(_DTYPE).contiguous()
        self.delta0: float = float(self.value(self._x0)) - self.f_star
        self.grad0_norm2: float = float(torch.linalg.vector_norm(self.grad(self._x0)))

    @property
    def x0(self) -> Tensor:
        """The fixed initial point (float64, event shape; a fresh copy)."""
        return self._x0.clone()

    @property
    def minimiser(self) -> Tensor:
        """A point where ``f = f_star`` and ``grad f = 0`` (a fresh copy)."""
        return self._minimiser.clone()

    @property
    def d(self) -> int:
        return math.prod(self.shape)

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) == 2

    @property
    def m(self) -> int | None:
        return self.shape[0] if self.is_matrix else None

    @property
    def n(self) -> int | None:
        return self.shape[1] if self.is_matrix else None

    def constants(self) -> dict[str, Any]:
        """Flat dict of the exact constants and every family parameter (tidy result rows)."""
        out: dict[str, Any] = {
            "name": self.name,
            "L": self.L,
            "f_star": self.f_star,
            "delta0": self.delta0,
            "grad0_norm2": self.grad0_norm2,
            "d": self.d,
            "m": self.m,
            "n": self.n,
            "is_matrix": self.is_matrix,
        }
        out.update(self._parameters())
        return out

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._parameters().items())
        return f"{type(self).__name__}(shape={self.shape}, {params}, L={self.L:.6g})"


# ----------------------------------------------------------------------------- cosine


class _CosineBase(Problem):
    r"""``f(x) = sum_i phi(y_i)``, ``y`` an orthogonal image of ``x``, with

    ``phi(t) = a/2 t^2 + b (1 - cos(w t))``, ``phi'(t) = a t + b w sin(w t)``,
    ``phi''(t) = a + b w^2 cos(w t) in [a - b w^2, a + b w^2]``.

    ``Hess f(x) = R^T diag(phi''(y)) R`` for the orthogonal map ``R``, so
    ``||Hess f||_op = max_i |phi''(y_i)| <= a + b w^2`` (``a, b >= 0``), with
    equality at ``x = 0``: ``L = a + b w^2`` exactly. Both terms of ``phi`` are
    ``>= 0`` and vanish at 0, so ``f* = 0`` at ``x = 0`` (the unique minimiser
    when ``a > 0``). ``phi'' < 0`` somewhere iff ``b w^2 > a`` (non-convex).
    """

    def _init_cosine(self, a: object, b: object, w: object, x0_scale: object, seed: object,
                     rotation: object) -> torch.Generator:
        self.a = _number("a", a)
        self.b = _number("b", b)
        self.w = _number("w", w)
        check_nonnegative("a", self.a)
        check_nonnegative("b", self.b)
        check_positive("w", self.w)
        if self.a + self.b * self.w**2 <= 0:
            raise ValueError(f"a + b w^2 must be > 0 (it is L), got a={self.a!r}, b={self.b!r}")
        self.x0_scale = _number("x0_scale", x0_scale)
        check_nonnegative("x0_scale", self.x0_scale)
        self.seed = _seed(seed)
        self.rotation = _bool("rotation", rotation)
        return _generator(self.seed)

    @property
    def is_convex(self) -> bool:
        return self.b * self.w**2 <= self.a

    def phi(self, t: Tensor) -> Tensor:
        if t.requires_grad:
            return 0.5 * self.a * t * t + self.b * (1.0 - torch.cos(self.w * t))
        # The same operations in the same order (the same bits), temporaries reused in place.
        c = torch.rsub(torch.mul(t, self.w).cos_(), 1.0).mul_(self.b)
        return torch.mul(t, 0.5 * self.a).mul_(t).add_(c)

    def dphi(self, t: Tensor) -> Tensor:
        if t.requires_grad:
            return self.a * t + (self.b * self.w) * torch.sin(self.w * t)
        s = torch.mul(t, self.w).sin_().mul_(self.b * self.w)  # as phi: same operations, in place
        return torch.mul(t, self.a).add_(s)

    def ddphi(self, t: Tensor) -> Tensor:
        return self.a + (self.b * self.w**2) * torch.cos(self.w * t)

    def _cosine_parameters(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "w": self.w, "rotation": self.rotation,
                "x0_scale": self.x0_scale, "seed": self.seed, "convex": self.is_convex}


class SeparableCosine(_CosineBase):
    """``f(x) = sum_i phi((Q x)_i)`` on ``R^d`` (see :class:`_CosineBase` for ``phi``, ``L``, ``f*``).

    ``Q`` is Haar-orthogonal drawn from ``seed`` when ``rotation=True`` (after
    ``x0``'s draw, so ``x0`` does not depend on ``rotation``), else the identity.
    ``L = a + b w^2``, ``f* = 0`` at ``x = 0``, ``x0 = x0_scale * z``.
    """

    name = "separable_cosine"

    def __init__(self, d: int, a: float = 1.0, b: float = 1.0, w: float = 2.0,
                 x0_scale: float = 1.0, seed: int = 0, rotation: bool = False) -> None:
        d = check_int_at_least("d", d, 1)
        g = self._init_cosine(a, b, w, x0_scale, seed, rotation)
        super().__init__((d,), L=self.a + self.b * self.w**2, f_star=0.0)
        x0 = self.x0_scale * torch.randn(d, generator=g, dtype=_DTYPE)
        self.Q: Tensor | None = _haar_orthogonal(d, g) if self.rotation else None
        self._finish_init(torch.zeros(d, dtype=_DTYPE), x0)

    def _y(self, x: Tensor) -> Tensor:
        return x if self.Q is None else x @ _like(self.Q, x).T

    def _value(self, x: Tensor) -> Tensor:
        return self.phi(self._y(x)).sum(dim=-1)

    def _grad(self, x: Tensor) -> Tensor:
        g = self.dphi(self._y(x))
        return g if self.Q is None else g @ _like(self.Q, x)

    def _parameters(self) -> dict[str, Any]:
        return self._cosine_parameters()


class EntrywiseCosineMatrix(_CosineBase):
    """``f(X) = sum_ij phi((U X V^T)_ij)`` on ``R^{m x n}``; the matrix twin of :class:`SeparableCosine`.

    ``U`` (m x m) and ``V`` (n x n) are Haar-orthogonal from ``seed`` when
    ``rotation=True`` (drawn after ``x0``), else identities; ``X -> U X V^T`` is
    a Frobenius isometry, so ``L = a + b w^2`` (Frobenius) exactly, ``f* = 0`` at
    ``X = 0``, ``x0 = x0_scale * Z``.
    """

    name = "entrywise_cosine_matrix"

    def __init__(self, m: int, n: int, a: float = 1.0, b: float = 1.0, w: float = 2.0,
                 x0_scale: float = 1.0, seed: int = 0, rotation: bool = False) -> None:
        m = check_int_at_least("m", m, 1)
        n = check_int_at_least("n", n, 1)
        g = self._init_cosine(a, b, w, x0_scale, seed, rotation)
        super().__init__((m, n), L=self.a + self.b * self.w**2, f_star=0.0)
        x0 = self.x0_scale * torch.randn(m, n, generator=g, dtype=_DTYPE)
        if self.rotation:
            self.U: Tensor | None = _haar_orthogonal(m, g)
            self.V: Tensor | None = _haar_orthogonal(n, g)
        else:
            self.U = self.V = None
        self._finish_init(torch.zeros(m, n, dtype=_DTYPE), x0)

    def _y(self, x: Tensor) -> Tensor:
        if self.U is None:
            return x
        return _like(self.U, x) @ x @ _like(self.V, x).T

    def _value(self, x: Tensor) -> Tensor:
        return self.phi(self._y(x)).sum(dim=(-2, -1))

    def _grad(self, x: Tensor) -> Tensor:
        g = self.dphi(self._y(x))
        if self.U is None:
            return g
        return _like(self.U, x).T @ g @ _like(self.V, x)

    def _parameters(self) -> dict[str, Any]:
        return self._cosine_parameters()


# ----------------------------------------------------------------------------- kinked quadratic


class KinkedQuadratic(Problem):
    r"""Convex ``C^{1,1}`` piecewise quadratic: ``f(x) = sum_i phi(x_i)`` with

    ``phi(t) = L/2 t^2`` for ``t >= 0`` and ``eps L/2 t^2`` for ``t < 0`` (``0 < eps < 1``).

    Constants: ``phi'(t) = L t`` / ``eps L t`` is continuous and piecewise linear
    with slopes ``L`` and ``eps L``, so ``grad f`` is exactly ``L``-Lipschitz
    (equality for any two points of the positive orthant); ``f* = 0`` at the
    unique minimiser ``x = 0``; ``x0 = x0_scale * z``.

    Why it exists (the ``d L tau`` arm of Theorem 1). For ``|t| < tau`` the
    central difference is
    ``g_tau(t) = (phi(t+tau) - phi(t-tau)) / (2 tau) = L ((t+tau)^2 - eps (t-tau)^2) / (4 tau)``,
    which is increasing in ``t`` (``phi`` is convex) and vanishes where
    ``t + tau = sqrt(eps) (tau - t)``, i.e. at

    ``t_tau = -tau (1 - sqrt(eps)) / (1 + sqrt(eps))``   (:meth:`stall_point`).

    A sign method driven by ``g_tau`` is pushed towards ``t_tau`` from both sides
    and oscillates there, where the true derivative is ``eps L t_tau``:
    ``|phi'(t_tau)| = c(eps) L tau`` with ``c(eps) = eps (1 - sqrt(eps)) / (1 + sqrt(eps))``
    (:meth:`stall_gradient`), so ``||grad f||_1`` stalls at ``d c(eps) L tau``.
    At the true minimiser the estimate is biased by ``g_tau(0) = (1 - eps) L tau / 4``
    (:meth:`bias_at_minimiser`).

    ``c(eps)`` is largest at ``sqrt(eps) = (sqrt(5) - 1)/2`` (``eps = (3 - sqrt(5))/2
    ~ 0.382``, the default), where ``c = ((sqrt(5) - 1)/2)^5 ~ 0.0902``. In one
    dimension every positively 2-homogeneous (scale-free, so the stall is
    ``propto tau`` for *all* ``tau`` at once) ``C^{1,1}`` function bounded below is
    of this form, so ``0.0902 L tau`` is the best such a fixed function can show;
    the general bound ``|g_tau - phi'| <= L tau / 2`` is reached only by
    functions built for one particular ``tau``.
    """

    name = "kinked_quadratic"
    EPS_WORST = (3.0 - math.sqrt(5.0)) / 2.0

    def __init__(self, d: int, L: float = 1.0, eps: float = EPS_WORST,
                 x0_scale: float = 1.0, seed: int = 0) -> None:
        d = check_int_at_least("d", d, 1)
        L = _number("L", L)
        check_positive("L", L)
        self.eps = _number("eps", eps)
        check_in_range("eps", self.eps, 0.0, 1.0, low_closed=False, high_closed=False)
        self.x0_scale = _number("x0_scale", x0_scale)
        check_nonnegative("x0_scale", self.x0_scale)
        self.seed = _seed(seed)
        super().__init__((d,), L=L, f_star=0.0)
        x0 = self.x0_scale * torch.randn(d, generator=_generator(self.seed), dtype=_DTYPE)
        self._finish_init(torch.zeros(d, dtype=_DTYPE), x0)

    @property
    def stall_coefficient(self) -> float:
        """``c(eps) = eps (1 - sqrt(eps)) / (1 + sqrt(eps))``."""
        s = math.sqrt(self.eps)
        return self.eps * (1.0 - s) / (1.0 + s)

    def _value(self, x: Tensor) -> Tensor:
        return (0.5 * x * self._grad(x)).sum(dim=-1)

    def _grad(self, x: Tensor) -> Tensor:
        # (not torch.where(x >= 0, L, eps L): two Python scalars would give float32)
        return torch.where(x >= 0, self.L * x, (self.eps * self.L) * x)

    def stall_point(self, tau: float | Tensor) -> float | Tensor:
        """``t_tau = -tau (1 - sqrt(eps)) / (1 + sqrt(eps))``: the zero of the central difference."""
        self._check_tau(tau)
        s = math.sqrt(self.eps)
        return -tau * (1.0 - s) / (1.0 + s)

    def stall_gradient(self, tau: float | Tensor) -> float | Tensor:
        """``|phi'(t_tau)| = c(eps) L tau``: per-coordinate true gradient where the estimate is 0."""
        self._check_tau(tau)
        return self.stall_coefficient * self.L * tau

    def bias_at_minimiser(self, tau: float | Tensor) -> float | Tensor:
        """Central difference at ``t = 0`` (where ``phi' = 0``): ``(1 - eps) L tau / 4``."""
        self._check_tau(tau)
        return (1.0 - self.eps) * self.L * tau / 4.0

    @staticmethod
    def _check_tau(tau: object) -> None:
        check_positive("tau", tau)

    def _parameters(self) -> dict[str, Any]:
        return {"eps": self.eps, "stall_coefficient": self.stall_coefficient,
                "x0_scale": self.x0_scale, "seed": self.seed}


# ----------------------------------------------------------------------------- Cauchy regression


class CauchyRegression(Problem):
    r"""Non-convex robust regression ``f(x) = (1/N) sum_k rho(a_k^T x - b_k)`` on ``R^d``,

    ``rho(r) = c^2/2 log(1 + (r/c)^2)``, ``rho'(r) = r / (1 + (r/c)^2)``,
    ``rho''(r) = c^2 (c^2 - r^2) / (c^2 + r^2)^2``.

    With ``u = (r/c)^2``, ``rho'' = (1 - u)/(1 + u)^2`` ranges over ``[-1/8, 1]``
    (max 1 at ``r = 0``, min -1/8 at ``r^2 = 3 c^2``). ``Hess f(x) = A^T D A / N``
    with ``D = diag(rho''(r)), |D_kk| <= 1``, so ``||Hess f||_op <= lambda_max(A^T A)/N``,
    with equality at ``x_star`` (all residuals 0, ``D = I``):
    ``L = lambda_max(A^T A) / N`` exactly (computed with ``eigvalsh``).

    Data (from ``seed``, in this order): ``A`` (``N x d``, i.i.d. ``N(0, 1)``),
    ``x_star = x_star_scale * N(0, I)``, then ``z`` for ``x0 = x_star + x0_scale z``.
    Labels are noise-free, ``b = A x_star``; ``rho >= 0`` with ``rho(0) = 0`` gives
    ``f* = 0`` at ``x_star`` (unique when ``A`` has full column rank).
    """

    name = "cauchy_regression"

    def __init__(self, n_samples: int, d: int, c: float = 1.0, seed: int = 0,
                 x0_scale: float = 1.0, x_star_scale: float = 1.0) -> None:
        self.n_samples = check_int_at_least("n_samples", n_samples, 1)
        d = check_int_at_least("d", d, 1)
        self.c = _number("c", c)
        check_positive("c", self.c)
        self.seed = _seed(seed)
        self.x0_scale = _number("x0_scale", x0_scale)
        check_nonnegative("x0_scale", self.x0_scale)
        self.x_star_scale = _number("x_star_scale", x_star_scale)
        check_nonnegative("x_star_scale", self.x_star_scale)
        g = _generator(self.seed)
        self.A = torch.randn(self.n_samples, d, generator=g, dtype=_DTYPE)
        x_star = self.x_star_scale * torch.randn(d, generator=g, dtype=_DTYPE)
        self.b = x_star @ self.A.T  # the same product as residuals(), so r(x_star) == 0 exactly
        x0 = x_star + self.x0_scale * torch.randn(d, generator=g, dtype=_DTYPE)
        super().__init__((d,), L=_largest_eigenvalue_of_gram(self.A) / self.n_samples, f_star=0.0)
        self._finish_init(x_star, x0)

    @property
    def x_star(self) -> Tensor:
        return self.minimiser

    def residuals(self, x: Tensor) -> Tensor:
        """``A x - b``, shape ``(*batch, n_samples)``."""
        self._check_x(x)
        return x @ _like(self.A, x).T - _like(self.b, x)

    def rho(self, r: Tensor) -> Tensor:
        return (0.5 * self.c**2) * torch.log1p((r / self.c) ** 2)

    def drho(self, r: Tensor) -> Tensor:
        return r / (1.0 + (r / self.c) ** 2)

    def _value(self, x: Tensor) -> Tensor:
        return self.rho(self.residuals(x)).mean(dim=-1)

    def _grad(self, x: Tensor) -> Tensor:
        return (self.drho(self.residuals(x)) @ _like(self.A, x)) / self.n_samples

    def _parameters(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "c": self.c, "x0_scale": self.x0_scale,
                "x_star_scale": self.x_star_scale, "seed": self.seed}


# ----------------------------------------------------------------------------- matrix sensing


class MatrixSensing(Problem):
    r"""Low-rank matrix sensing ``f(X) = 1/(2p) sum_k (<A_k, X> - y_k)^2`` on ``R^{m x n}``.

    ``y_k = <A_k, X_star>`` (noise-free), ``X_star = x_star_scale * G_1 G_2^T / sqrt(r)``
    of rank ``r`` (``G_1``: ``m x r``, ``G_2``: ``n x r``, i.i.d. ``N(0, 1)``), sensing
    matrices ``A_k`` i.i.d. ``N(0, 1)`` entries, ``k = 1..p``. With ``M`` the
    ``p x mn`` matrix of rows ``vec(A_k)``, ``f`` is the quadratic
    ``||M vec(X) - y||^2 / (2p)`` with constant Hessian ``M^T M / p``: ``L =
    lambda_max(M^T M) / p`` exactly (Frobenius), ``f* = 0`` at ``X_star``
    (unique iff ``p >= mn`` and ``M`` has full column rank; the value ``f* = 0``
    holds regardless). Draw order: ``A``, ``G_1``, ``G_2``, then ``Z`` for
    ``x0 = X_star + x0_scale Z``.
    """

    name = "matrix_sensing"

    def __init__(self, m: int, n: int, rank: int, n_measurements: int, seed: int = 0,
                 x0_scale: float = 1.0, x_star_scale: float = 1.0) -> None:
        m = check_int_at_least("m", m, 1)
        n = check_int_at_least("n", n, 1)
        self.rank = check_int_at_least("rank", rank, 1)
        if self.rank > min(m, n):
            raise ValueError(f"rank must be in [1, min(m, n)] = [1, {min(m, n)}], got {rank!r}")
        self.n_measurements = check_int_at_least("n_measurements", n_measurements, 1)
        self.seed = _seed(seed)
        self.x0_scale = _number("x0_scale", x0_scale)
        check_nonnegative("x0_scale", self.x0_scale)
        self.x_star_scale = _number("x_star_scale", x_star_scale)
        check_nonnegative("x_star_scale", self.x_star_scale)
        g = _generator(self.seed)
        p = self.n_measurements
        self.A = torch.randn(p, m, n, generator=g, dtype=_DTYPE)
        self._M = self.A.reshape(p, m * n)
        g1 = torch.randn(m, self.rank, generator=g, dtype=_DTYPE)
        g2 = torch.randn(n, self.rank, generator=g, dtype=_DTYPE)
        x_star = self.x_star_scale * (g1 @ g2.T) / math.sqrt(self.rank)
        self.y = x_star.reshape(m * n) @ self._M.T  # as in measurements(): r(X_star) == 0 exactly
        x0 = x_star + self.x0_scale * torch.randn(m, n, generator=g, dtype=_DTYPE)
        super().__init__((m, n), L=_largest_eigenvalue_of_gram(self._M) / p, f_star=0.0)
        self._finish_init(x_star, x0)

    @property
    def X_star(self) -> Tensor:
        return self.minimiser

    def measurements(self, x: Tensor) -> Tensor:
        """``(<A_k, X>)_k``, shape ``(*batch, p)``."""
        self._check_x(x)
        return x.reshape(*x.shape[:-2], -1) @ _like(self._M, x).T

    def _value(self, x: Tensor) -> Tensor:
        r = self.measurements(x) - _like(self.y, x)
        return (r * r).sum(dim=-1) / (2 * self.n_measurements)

    def _grad(self, x: Tensor) -> Tensor:
        r = self.measurements(x) - _like(self.y, x)
        return ((r @ _like(self._M, x)) / self.n_measurements).reshape(x.shape)

    def _parameters(self) -> dict[str, Any]:
        return {"rank": self.rank, "n_measurements": self.n_measurements, "x0_scale": self.x0_scale,
                "x_star_scale": self.x_star_scale, "seed": self.seed}
