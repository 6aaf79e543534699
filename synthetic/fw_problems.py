"""Problems for Frank-Wolfe and projected gradient descent with JAGUAR (issue 14, item 3).

arXiv 2409.10442 ("New Aspects of Black Box Conditional Gradient", ``../shared/EXTENSIONS.md``
section 1) runs FW on a rotated quadratic (d = 200, spectrum in [1, 1000]) and on logistic
regression / SVM over LIBSVM mushrooms and MNIST, with ``Q`` the simplex, the l1 ball and the
l2 ball of radius 1, and GD on non-convex and PL functions. The families here:

* :class:`Quadratic` (``quadratic``): ``f(x) = 1/2 (x - c)^T A (x - c)``, ``A = U diag(s) U^T``,
  ``U`` Haar-orthogonal from ``seed``, ``s`` log- or linearly spaced in ``[mu, L]`` (both ends
  included): ``L = max s``, ``mu = min s`` exactly (the eigenvalues of the float64 ``A`` differ
  from ``s`` by rounding, ~1e-13 relative); ``f* = 0`` at ``c``.
* :class:`Logistic` (``logistic``): ``f(x) = (1/n) sum_i log(1 + exp(-y_i a_i^T x)) + lam/2 ||x||^2``;
  ``Hess f = A^T diag(s_i (1 - s_i)) A / n + lam I`` with ``s_i (1 - s_i) <= 1/4``, so
  ``L = lambda_max(A^T A) / (4 n) + lam``, attained at ``x = 0`` (all ``s_i = 1/2``): exact.
* :class:`SquaredHinge` (``squared_hinge``, a smooth SVM): ``f(x) = (1/n) sum_i max(0, 1 - y_i a_i^T x)^2
  + lam/2 ||x||^2``; ``grad f`` is piecewise linear with generalised Hessians
  ``2 A_S^T A_S / n + lam I`` (``S``: the active margins), so ``L = 2 lambda_max(A^T A) / n + lam``,
  attained at ``x = 0`` (every margin active): exact.
* :class:`SinePL` (``sine_pl``): ``f(x) = sum_i t_i^2 + b sin^2(t_i)``, ``t = Q x`` (Karimi, Nutini
  and Schmidt, ECML 2016, use ``b = 3``): non-convex for ``b > 1`` but PL, with ``L = 2 + 2 b``
  (attained at 0) and the exact PL constant ``mu = inf_t phi'(t)^2 / (2 phi(t))`` computed
  numerically (:func:`sine_pl_mu`); ``f* = 0`` at 0.
* The non-convex, non-PL problem for the GD results is the existing ``cauchy_regression``
  (``rho' -> 0`` as ``|r| -> inf``, so no PL inequality holds; exact ``L``, ``f* = 0``).

Real data (:func:`load_dataset`), from the data files bundled inside scikit-learn (nothing is
downloaded; LIBSVM mushrooms and MNIST are not shipped by any registry package found here):

* ``breast_cancer``: ``load_breast_cancer``, 569 x 30, binary (malignant / benign), the bundled
  real binary-classification set closest to the paper's (mushrooms, 8124 x 112, is not bundled);
* ``digits``: ``load_digits`` (1797 8x8 handwritten digits, a small MNIST), made binary as
  even (+1) vs odd (-1); the pixels that are constant over the set are dropped (3 of 64: their
  column would be zero after standardisation, a flat direction), leaving d = 61.

Features are standardised (each column to mean 0, standard deviation 1 over the set): the raw
breast-cancer columns span five orders of magnitude (areas ~1e3, fractal dimensions ~1e-2), so
``L`` would be set by one column and the conditioning would be hopeless for FW on unit balls;
LIBSVM ships its data sets scaled for the same reason. Labels are +-1; no intercept column.

Constrained optima (:meth:`ConvexFWProblem.f_star_on`): the minimum of ``f`` over ``Q``
(``simplex``, ``l1``, ``l2`` of radius ``R``, ``zotheory.constraints``), computed once per
(family parameters, set, radius) and cached (``functools.lru_cache``) by accelerated projected
gradient (FISTA, step ``1/L``, exact gradients, exact projections) with O'Donoghue-Candes
gradient restart, in float64, until the FW gap ``max_{y in Q} <grad f(x), x - y>`` at the
returned point is ``<= tol * max(1, R ||grad f(x)||_inf)`` (``tol = 1e-12``). For convex ``f``
the FW gap bounds ``f(x) - f*_Q``, so the returned value is exact to that gap: ``f*_Q`` lies
in ``[f_star - fw_gap, f_star]`` (both reported). The unconstrained ``f*`` of the logistic and
squared-hinge families (``lam > 0``) is computed the same way with no projection, stopped at
``||grad f||^2 / (2 lam) <= 1e-14 max(1, |f|)`` (a certified bound, ``f`` being
``lam``-strongly convex); with ``lam = 0`` the infimum may be unattained (separable data) and
``f_star``, ``minimiser`` and ``delta0`` are NaN: use ``f_star_on``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from zotheory._checks import check_choice, check_int_at_least, check_nonnegative, check_positive

from .problems import (
    Problem,
    _bool,
    _generator,
    _haar_orthogonal,
    _largest_eigenvalue_of_gram,
    _like,
    _number,
    _seed,
)

__all__ = [
    "ConstrainedOptimum",
    "ConvexFWProblem",
    "DATASETS",
    "Logistic",
    "Quadratic",
    "SinePL",
    "SquaredHinge",
    "load_dataset",
    "sine_pl_mu",
]

_DTYPE = torch.float64

DATASETS = ("breast_cancer", "digits")


# ----------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=None)
def _load_dataset_cached(name: str) -> tuple[Tensor, Tensor]:
    try:
        from sklearn import datasets
    except ImportError as e:  # pragma: no cover - a broken install
        raise ImportError("the logistic / squared_hinge problems need scikit-learn "
                          "(a dependency: `bash scripts/setup.sh` installs it)") from e
    if name == "breast_cancer":
        raw = datasets.load_breast_cancer()
        X = np.asarray(raw.data, dtype=np.float64)
        y = np.where(raw.target == 1, 1.0, -1.0)  # 1 = benign
    else:  # digits
        raw = datasets.load_digits()
        X = np.asarray(raw.data, dtype=np.float64)
        y = np.where(raw.target % 2 == 0, 1.0, -1.0)
    X = X[:, X.std(axis=0) > 0]  # drop constant columns (digits: 3 always-blank pixels)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(y)


def load_dataset(name: str) -> tuple[Tensor, Tensor]:
    """``(A, y)``: standardised float64 features ``(n, d)`` and labels in ``{-1, +1}`` (copies).

    Deterministic: read from the files bundled in scikit-learn, no randomness, no download.
    """
    check_choice("dataset", name, DATASETS)
    A, y = _load_dataset_cached(name)
    return A.clone(), y.clone()


def _x0_scale_and_seed(x0_scale: object, seed: object) -> tuple[float, int]:
    x0_scale = _number("x0_scale", x0_scale)
    check_nonnegative("x0_scale", x0_scale)
    return x0_scale, _seed(seed)


# ----------------------------------------------------------------------------- constrained optima


@dataclass(frozen=True)
class ConstrainedOptimum:
    """``min_{x in Q} f(x)`` as computed: ``f_star = f(x)``, certified by ``fw_gap`` at ``x``.

    For convex ``f``: ``f_star - fw_gap <= f*_Q <= f_star`` (``lower_bound = f_star - fw_gap``).
    """

    set_kind: str
    radius: float
    f_star: float
    x: Tensor
    fw_gap: float
    lower_bound: float
    iterations: int


def _accelerated_projected_gradient(
    value: Callable[[Tensor], Tensor], grad: Callable[[Tensor], Tensor], L: float,
    project: Callable[[Tensor], Tensor], certificate: Callable[[Tensor, Tensor], tuple[float, float]],
    x_start: Tensor, max_iter: int,
) -> tuple[Tensor, float, int, bool]:
    """FISTA (step 1/L) with gradient restart; stops when ``certificate(x, g) -> (c, limit)`` has ``c <= limit``.

    Returns the point with the smallest certificate seen, the certificate, the iteration count and
    whether it met its limit.
    """
    x = project(x_start)
    y = x.clone()
    t = 1.0
    best_x, best_c = x.clone(), math.inf
    for k in range(1, max_iter + 1):
        gy = grad(y)
        x_new = project(y - gy / L)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        if float((gy * (x_new - x)).sum()) > 0.0:  # restart: momentum points uphill
            t_new, y = 1.0, x_new.clone()
        else:
            y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        c, limit = certificate(x, grad(x))
        if c < best_c:
            best_x, best_c = x.clone(), c
        if c <= limit:
            return best_x, best_c, k, True
    return best_x, best_c, max_iter, False


@functools.lru_cache(maxsize=256)
def _constrained_optimum_cached(cls: type, key: tuple, kind: str, R: float, tol: float,
                                max_iter: int) -> ConstrainedOptimum:
    problem = cls(**dict(key))
    return problem._solve_on_set(kind, R, tol, max_iter)


class ConvexFWProblem(Problem):
    """A convex problem with ``f_star_on(set_kind, R)``: its minimum over a constraint set."""

    _init_key: tuple

    def _remember_init(self, **kwargs: Any) -> None:
        self._init_key = tuple(sorted(kwargs.items()))

    def f_star_on(self, set_kind: str, radius: float = 1.0, *, tol: float = 1e-12,
                  max_iter: int = 200_000) -> ConstrainedOptimum:
        """``min_{x in Q} f(x)`` for ``Q = make_set(set_kind, radius)`` with its FW-gap certificate.

        Computed once per (family parameters, set, radius, tol) and cached; exact to
        ``fw_gap <= tol * max(1, R ||grad f(x)||_inf)`` (see the module doc). Raises
        ``RuntimeError`` if ``max_iter`` iterations do not reach it.
        """
        check_choice("set_kind", set_kind, ("simplex", "l1", "l2"))
        check_positive("radius", radius)
        check_positive("tol", tol)
        max_iter = check_int_at_least("max_iter", max_iter, 1)
        res = _constrained_optimum_cached(type(self), self._init_key, set_kind, float(radius),
                                          float(tol), max_iter)
        return replace(res, x=res.x.clone())

    def _solve_on_set(self, kind: str, R: float, tol: float, max_iter: int) -> ConstrainedOptimum:
        from zotheory.constraints import make_set

        Q = make_set(kind, R)

        def certificate(x: Tensor, g: Tensor) -> tuple[float, float]:
            return float(Q.fw_gap(x, g)), tol * max(1.0, R * float(g.abs().max()))

        start = torch.full((self.d,), R / self.d, dtype=_DTYPE)  # in all three sets
        x, gap, iters, ok = _accelerated_projected_gradient(
            self.value, self.grad, self.L, Q.project, certificate, start, max_iter)
        if not ok:
            raise RuntimeError(f"{self.name}: the constrained optimum over {kind}(R={R}) reached FW gap "
                               f"{gap:.3g} after {iters} iterations, above its tolerance; raise max_iter")
        f = float(self.value(x))
        return ConstrainedOptimum(kind, R, f, x, gap, f - gap, iters)

    def _unconstrained_minimiser(self, lam: float, max_iter: int = 200_000) -> Tensor:
        """Minimiser of a ``lam``-strongly convex ``f`` (``lam > 0``), ``||g||^2/(2 lam) <= 1e-14 max(1,|f|)``."""

        def certificate(x: Tensor, g: Tensor) -> tuple[float, float]:
            return float((g * g).sum()) / (2.0 * lam), 1e-14 * max(1.0, abs(float(self.value(x))))

        x, c, iters, ok = _accelerated_projected_gradient(
            self.value, self.grad, self.L, lambda v: v, certificate,
            torch.zeros(self.d, dtype=_DTYPE), max_iter)
        if not ok:
            raise RuntimeError(f"{self.name}: unconstrained solve stopped at bound {c:.3g} after {iters} iterations")
        return x


# ----------------------------------------------------------------------------- quadratic


class Quadratic(ConvexFWProblem):
    """``f(x) = 1/2 (x - c)^T A (x - c)``, ``A = U diag(s) U^T`` (see the module doc).

    ``s`` has ``d`` values from ``mu`` to ``L`` (``spectrum="log"``: geometric, ``"linear"``:
    arithmetic; both ends included, ``d = 1``: ``s = [L]`` and then ``mu`` must equal ``L``).
    Draw order from ``seed``: ``U`` (Haar; the identity when ``rotation=False``), ``z_1`` for the
    centre ``c = c_norm z_1 / ||z_1||`` (``||c|| = c_norm``: the default 2 puts ``c`` outside the
    unit balls and the simplex, so the constrained optima lie on the boundary), then
    ``x0 = c + x0_scale z_2``. ``f* = 0`` at ``c``; ``L = max s``, ``mu = min s``.
    The paper's instance: ``d = 200, mu = 1, L = 1000``.
    """

    name = "quadratic"

    def __init__(self, d: int, mu: float = 1.0, L: float = 1000.0, spectrum: str = "log",
                 c_norm: float = 2.0, x0_scale: float = 1.0, seed: int = 0,
                 rotation: bool = True) -> None:
        d = check_int_at_least("d", d, 1)
        self.mu = _number("mu", mu)
        L = _number("L", L)
        check_positive("mu", self.mu)
        if L < self.mu or (d == 1 and L != self.mu):
            raise ValueError(f"L must be >= mu (and == mu when d = 1), got mu={self.mu!r}, L={L!r}")
        self.spectrum = check_choice("spectrum", spectrum, ("log", "linear"))
        self.c_norm = _number("c_norm", c_norm)
        check_nonnegative("c_norm", self.c_norm)
        self.x0_scale, self.seed = _x0_scale_and_seed(x0_scale, seed)
        self.rotation = _bool("rotation", rotation)
        self._remember_init(d=d, mu=self.mu, L=L, spectrum=self.spectrum, c_norm=self.c_norm,
                            x0_scale=self.x0_scale, seed=self.seed, rotation=self.rotation)
        if d == 1:
            s = torch.tensor([L], dtype=_DTYPE)
        elif self.spectrum == "log":
            s = torch.logspace(math.log10(self.mu), math.log10(L), d, dtype=_DTYPE)
            s[0], s[-1] = self.mu, L  # the ends exactly
        else:
            s = torch.linspace(self.mu, L, d, dtype=_DTYPE)
            s[0], s[-1] = self.mu, L
        self.eigenvalues = s
        g = _generator(self.seed)
        U = _haar_orthogonal(d, g) if self.rotation else torch.eye(d, dtype=_DTYPE)
        self.A = (U * s) @ U.T
        self.A = 0.5 * (self.A + self.A.T)  # exactly symmetric
        z = torch.randn(d, generator=g, dtype=_DTYPE)
        self.c = self.c_norm * z / torch.linalg.vector_norm(z)
        x0 = self.c + self.x0_scale * torch.randn(d, generator=g, dtype=_DTYPE)
        super().__init__((d,), L=L, f_star=0.0)
        self._finish_init(self.c.clone(), x0)

    def _value(self, x: Tensor) -> Tensor:
        r = x - _like(self.c, x)
        return 0.5 * (r * (r @ _like(self.A, x))).sum(dim=-1)

    def _grad(self, x: Tensor) -> Tensor:
        return (x - _like(self.c, x)) @ _like(self.A, x)

    def hessian(self) -> Tensor:
        return self.A.clone()

    def _parameters(self) -> dict[str, Any]:
        return {"mu": self.mu, "spectrum": self.spectrum, "c_norm": self.c_norm,
                "x0_scale": self.x0_scale, "seed": self.seed, "rotation": self.rotation}


# ----------------------------------------------------------------------------- classification losses


class _Classification(ConvexFWProblem):
    """Shared data handling: ``A`` (n x d, standardised), ``y`` in {-1, +1}, ``lam >= 0``."""

    _curvature: float  # L = _curvature * lambda_max(A^T A) / n + lam

    def __init__(self, dataset: str = "breast_cancer", lam: float = 1e-3, x0_scale: float = 1.0,
                 seed: int = 0) -> None:
        self.dataset = check_choice("dataset", dataset, DATASETS)
        self.lam = _number("lam", lam)
        check_nonnegative("lam", self.lam)
        self.x0_scale, self.seed = _x0_scale_and_seed(x0_scale, seed)
        self._remember_init(dataset=self.dataset, lam=self.lam, x0_scale=self.x0_scale, seed=self.seed)
        self.A, self.y = load_dataset(self.dataset)
        self.n_samples, d = self.A.shape
        self.yA = self.y[:, None] * self.A  # rows y_i a_i: margins m = x @ yA^T
        L = self._curvature * _largest_eigenvalue_of_gram(self.A) / self.n_samples + self.lam
        super().__init__((d,), L=L, f_star=math.nan)
        x0 = self.x0_scale * torch.randn(d, generator=_generator(self.seed), dtype=_DTYPE)
        if self.lam > 0:
            minimiser = self._unconstrained_minimiser(self.lam)
            self.f_star = float(self.value(minimiser))
        else:
            minimiser = torch.full((d,), math.nan, dtype=_DTYPE)
        self._finish_init(minimiser, x0)

    def margins(self, x: Tensor) -> Tensor:
        """``y_i a_i^T x``, shape ``(*batch, n_samples)``."""
        return x @ _like(self.yA, x).T

    def _ridge(self, x: Tensor) -> Tensor:
        return (0.5 * self.lam) * (x * x).sum(dim=-1)

    def _parameters(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "n_samples": self.n_samples, "lam": self.lam,
                "x0_scale": self.x0_scale, "seed": self.seed}


class Logistic(_Classification):
    """Binary logistic regression, mean loss plus ``lam/2 ||x||^2`` (see the module doc).

    ``log(1 + exp(-m))`` is evaluated as ``max(-m, 0) + log1p(exp(-|m|))`` (exact in float64
    for every ``m``; ``torch.nn.functional.softplus`` switches to the identity past 20, an
    absolute error up to 2e-9 per sample).
    """

    name = "logistic"
    _curvature = 0.25

    def _value(self, x: Tensor) -> Tensor:
        m = self.margins(x)
        loss = torch.clamp(-m, min=0.0) + torch.log1p(torch.exp(-m.abs()))
        return loss.mean(dim=-1) + self._ridge(x)

    def _grad(self, x: Tensor) -> Tensor:
        w = torch.sigmoid(-self.margins(x))  # -d/dm log(1 + exp(-m))
        return -(w @ _like(self.yA, x)) / self.n_samples + self.lam * x


class SquaredHinge(_Classification):
    """Smooth SVM: mean ``max(0, 1 - y_i a_i^T x)^2`` plus ``lam/2 ||x||^2`` (see the module doc)."""

    name = "squared_hinge"
    _curvature = 2.0

    def _value(self, x: Tensor) -> Tensor:
        h = torch.clamp(1.0 - self.margins(x), min=0.0)
        return (h * h).mean(dim=-1) + self._ridge(x)

    def _grad(self, x: Tensor) -> Tensor:
        h = torch.clamp(1.0 - self.margins(x), min=0.0)
        return -(2.0 / self.n_samples) * (h @ _like(self.yA, x)) + self.lam * x


# ----------------------------------------------------------------------------- PL, non-convex

_SINE_B_MAX = 4.5  # below b* = 4.603 (tan u = u, b* = -u / sin u): no stationary point but 0


@functools.lru_cache(maxsize=64)
def sine_pl_mu(b: float) -> float:
    """The exact PL constant of ``phi(t) = t^2 + b sin^2 t``: ``inf_{t != 0} phi'(t)^2 / (2 phi(t))``.

    ``phi`` is even, ``phi'(t) = 2 t + b sin 2t``. The ratio tends to 8 at 0 (``phi ~ (1 + b) t^2``
    gives ``2 (1 + b)``) and to 2 at infinity; for ``t >= 50`` it is at least
    ``(2t - b)^2 / (2 (t^2 + b)) > 1.8``. The infimum over ``(0, 50]`` is found on a grid of step
    1e-4 and refined by bounded Brent search (scipy) to ~1e-15 relative.
    """
    from scipy.optimize import minimize_scalar

    def ratio(t):
        return (2 * t + b * np.sin(2 * t)) ** 2 / (2 * (t * t + b * np.sin(t) ** 2))

    grid = np.arange(1e-4, 50.0, 1e-4)
    r = ratio(grid)
    i = int(np.argmin(r))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(ratio, bounds=(lo, hi), method="bounded", options={"xatol": 1e-14})
    mu = float(min(res.fun, r[i], 2.0 * (1.0 + b)))
    if mu >= 1.8:  # pragma: no cover - b in [0, 4.5] never gets here
        raise ValueError(f"sine_pl_mu: the grid minimum {mu} is not below the tail bound")
    return mu


class SinePL(Problem):
    """Non-convex PL problem ``f(x) = sum_i phi((Q x)_i)``, ``phi(t) = t^2 + b sin^2 t``.

    ``phi''(t) = 2 + 2 b cos 2t in [2 - 2b, 2 + 2b]``: ``L = 2 + 2 b`` (attained at 0), non-convex
    for ``b > 1``. PL: ``||grad f||^2 = sum phi'(t_i)^2 >= 2 mu sum phi(t_i) = 2 mu (f - f*)``
    with ``mu = sine_pl_mu(b)``, tight (all but one ``t_i`` at 0). ``f* = 0`` at 0 (unique:
    ``phi'(t) = 0`` only at 0 for ``b < 4.603``; ``b`` is limited to ``[0, 4.5]``).
    ``Q`` Haar-orthogonal from ``seed`` (drawn after ``x0 = x0_scale z``) when ``rotation=True``.
    """

    name = "sine_pl"

    def __init__(self, d: int, b: float = 3.0, x0_scale: float = 3.0, seed: int = 0,
                 rotation: bool = True) -> None:
        d = check_int_at_least("d", d, 1)
        self.b = _number("b", b)
        if not 0.0 <= self.b <= _SINE_B_MAX:
            raise ValueError(f"b must be in [0, {_SINE_B_MAX}] (PL with a unique minimiser), got {b!r}")
        self.x0_scale, self.seed = _x0_scale_and_seed(x0_scale, seed)
        self.rotation = _bool("rotation", rotation)
        self.mu = sine_pl_mu(self.b)
        super().__init__((d,), L=2.0 + 2.0 * self.b, f_star=0.0)
        g = _generator(self.seed)
        x0 = self.x0_scale * torch.randn(d, generator=g, dtype=_DTYPE)
        self.Q: Tensor | None = _haar_orthogonal(d, g) if self.rotation else None
        self._finish_init(torch.zeros(d, dtype=_DTYPE), x0)

    def _t(self, x: Tensor) -> Tensor:
        return x if self.Q is None else x @ _like(self.Q, x).T

    def _value(self, x: Tensor) -> Tensor:
        t = self._t(x)
        return (t * t + self.b * torch.sin(t) ** 2).sum(dim=-1)

    def _grad(self, x: Tensor) -> Tensor:
        t = self._t(x)
        g = 2.0 * t + self.b * torch.sin(2.0 * t)
        return g if self.Q is None else g @ _like(self.Q, x)

    @property
    def is_convex(self) -> bool:
        return self.b <= 1.0

    def _parameters(self) -> dict[str, Any]:
        return {"b": self.b, "mu": self.mu, "convex": self.is_convex, "x0_scale": self.x0_scale,
                "seed": self.seed, "rotation": self.rotation}
