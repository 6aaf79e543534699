"""Constraint sets for Frank-Wolfe and projected gradient descent (issue 14, item 2).

Three compact convex sets ``Q`` of ``R^d``, each with a radius ``R > 0``:

* :class:`Simplex` -- the (scaled) probability simplex ``{x >= 0, sum_i x_i = R}``
  (``R = 1``: the probability simplex);
* :class:`L1Ball` -- ``{||x||_1 <= R}``;
* :class:`L2Ball` -- ``{||x||_2 <= R}``.

Each set has

* ``lmo(g)``: the linear minimisation oracle ``argmin_{s in Q} <s, g>``. Simplex: the vertex
  ``R e_i`` of the smallest coordinate ``g_i``; l1 ball: ``-R sign(g_i) e_i`` at the largest
  ``|g_i|``; l2 ball: ``-R g / ||g||_2``;
* ``support(g)``: ``min_{s in Q} <s, g>`` in closed form (``R min_i g_i``, ``-R max_i |g_i|``,
  ``-R ||g||_2``);
* ``project(y)``: the exact Euclidean projection ``argmin_{p in Q} ||p - y||_2``. Simplex: the
  sort-based algorithm (Held, Wolfe and Crowder 1974; Duchi, Shalev-Shwartz, Singer and Chandra,
  "Efficient projections onto the l1-ball for learning in high dimensions", ICML 2008, Fig. 1):
  sort ``u = y`` descending, ``rho = max{j : u_j - (sum_{r<=j} u_r - R) / j > 0}``,
  ``theta = (sum_{r<=rho} u_r - R) / rho``, ``p = max(y - theta, 0)``. l1 ball: ``y`` itself when
  ``||y||_1 <= R``, else ``sign(y) * P_simplex(|y|)`` (Duchi et al. 2008, Sec. 4). l2 ball: ``y``
  when ``||y||_2 <= R``, else ``R y / ||y||_2``. Points of the balls are returned unchanged
  (never rescaled: one of the defects of the authors' experiment code, see
  ``../shared/EXTENSIONS.md`` section 1);
* ``fw_gap(x, grad)``: the Frank-Wolfe gap ``max_{y in Q} <grad, x - y> = <grad, x - lmo(grad)>``,
  computed as ``<grad, x> - support(grad)``. It is ``>= 0`` for ``x`` in ``Q`` (not checked) and
  ``0`` exactly at the minimisers of a convex ``f`` over ``Q`` (Jaggi, "Revisiting Frank-Wolfe",
  ICML 2013);
* ``contains(x, atol=None)``: membership up to an absolute tolerance (default
  ``4 d eps(dtype) max(R, 1)``: the rounding of a sum of ``d`` terms);
* ``diameter(d)``: ``max ||x - y||_2`` over ``Q`` in ``R^d``: ``sqrt(2) R`` for the simplex
  (``0`` when ``d = 1``), ``2 R`` for both balls.

**Tie rule.** Where several coordinates attain the minimum of ``g`` (simplex) or the maximum of
``|g|`` (l1 ball), the LMO takes the **lowest index** (``torch.argmin`` / ``torch.argmax`` return
the first one); in the l1 ball ``g_i = a`` and ``g_j = -a`` tie, and the lower of ``i, j`` wins
whatever its sign.

**Zero rule.** For ``g = 0`` every point of ``Q`` minimises ``<s, g>``. The LMO then returns the
point its formula gives for ``g = +eps e_1`` with ``eps -> 0+``: ``R e_1`` (simplex, by the tie
rule), ``-R e_1`` (l1 ball: ``sign(0)`` is read as ``+1``) and ``-R e_1`` (l2 ball). So the
LMO's output is always an extreme point of ``Q`` (a vertex, or a point of the sphere) and
Frank-Wolfe iterates stay convex combinations of extreme points; the FW gap is ``0`` either way.
The l2 LMO normalises ``g / max_i |g_i|`` first, so tiny (subnormal) and huge ``g`` give
``||s|| = R`` instead of ``0/0`` or ``inf/inf``; the l2 norms here are computed the same way.

**Shapes.** Every function takes one vector ``(d,)`` or a batch of runs ``(B, d)`` (the batch is
read from ``ndim``; ``d >= 1``), float32 or float64, and never modifies its input; outputs have
the input's dtype and device, per-run scalars (``fw_gap``, ``contains``, ``support``) shape ``()``
or ``(B,)``. The radius is a number or, per run, a positive tensor of shape ``()`` or ``(B,)``.
Bad radii, shapes, dtypes and non-finite inputs raise a one-line ``ValueError`` naming the argument.

**Moves and schedules** (arXiv 2409.10442, "New Aspects of Black Box Conditional Gradient:
Variance Reduction and One Point Feedback"; ``../shared/EXTENSIONS.md`` section 1):

* :func:`frank_wolfe_move`: ``x <- x + gamma (s - x)``, ``gamma in [0, 1]``, in place, computed
  as written (exactly ``x`` at ``gamma = 0``; at ``gamma = 1``, ``s`` up to the rounding of
  ``x + (s - x)``);
* :func:`projected_step`: ``x <- Proj_Q(x - gamma direction)``, in place;
* :func:`fw_step_deterministic` ``= 4 / (k + 8 d)`` (FW + JAGUAR-d),
  :func:`fw_step_stochastic` ``= 4 / (k + 8 d^{3/2})`` and :func:`momentum_stochastic`
  ``= 4 / (k + 8 d^{3/2})^{2/3}`` (FW + JAGUAR-s: step and momentum ``eta_k``), ``k = 0, 1, ...``.

Deviations: none known (the schedules are as EXTENSIONS.md transcribes them; the paper's full
text was not available here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._checks import (
    check_in_range,
    check_int_at_least,
    check_nonnegative,
    check_positive,
)
from .algorithms._zo_common import per_run

__all__ = [
    "ConstraintSet",
    "L1Ball",
    "L2Ball",
    "Simplex",
    "frank_wolfe_move",
    "fw_step_deterministic",
    "fw_step_stochastic",
    "make_set",
    "momentum_stochastic",
    "projected_step",
]


def _check_vector(name: str, x: object) -> torch.Tensor:
    """``x`` must be a finite float32/float64 tensor of shape ``(d,)`` or ``(B, d)``, ``d >= 1``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (d,) or (B, d) with d >= 1, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got non-finite values")
    return x


def _check_same_shape(name: str, t: object, like: torch.Tensor, like_name: str) -> torch.Tensor:
    _check_vector(name, t)
    if t.shape != like.shape or t.dtype != like.dtype:  # type: ignore[union-attr]
        raise ValueError(f"{name} must have the shape and dtype of {like_name} "
                         f"{tuple(like.shape)} {like.dtype}, got {tuple(t.shape)} {t.dtype}")  # type: ignore[union-attr]
    return t  # type: ignore[return-value]


def _scale(x: torch.Tensor) -> torch.Tensor:
    """``max_i |x_i|`` per run, shape ``(..., 1)``."""
    return x.abs().amax(dim=-1, keepdim=True)


def _norm2(x: torch.Tensor) -> torch.Tensor:
    """``||x||_2`` per run, shape ``(..., 1)``, without overflow or underflow (scaled by max |x_i|)."""
    m = _scale(x)
    safe = torch.where(m > 0, m, torch.ones_like(m))
    return m * torch.linalg.vector_norm(x / safe, dim=-1, keepdim=True)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=-1)


def _simplex_projection(y: torch.Tensor, R: float | torch.Tensor) -> torch.Tensor:
    """Sort-based projection onto ``{p >= 0, sum p = R}`` (Duchi et al. 2008, Fig. 1), per row."""
    d = y.shape[-1]
    u = torch.sort(y, dim=-1, descending=True).values
    css = torch.cumsum(u, dim=-1) - R
    j = torch.arange(1, d + 1, device=y.device)
    positive = u - css / j.to(y.dtype) > 0
    # rho = the largest j with a positive entry (j = 1 always is, up to rounding of huge |y|).
    rho = torch.where(positive, j, torch.zeros_like(j)).amax(dim=-1, keepdim=True).clamp(min=1)
    theta = css.gather(-1, rho - 1) / rho.to(y.dtype)
    return (y - theta).clamp(min=0)


@dataclass(frozen=True)
class ConstraintSet:
    """A compact convex set of radius ``radius`` (a number or per-run tensor, ``> 0``)."""

    radius: float | torch.Tensor = 1.0
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_positive("radius", self.radius)

    def _R(self, x: torch.Tensor) -> float | torch.Tensor:
        """The radius shaped to broadcast against ``x`` (``(B, 1)`` for a batch)."""
        return per_run("radius", self.radius, tuple(x.shape[:-1]), 1, x)

    # -- the set-specific parts -------------------------------------------------------------
    def _lmo(self, g: torch.Tensor, R: float | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _support(self, g: torch.Tensor, R: float | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _project(self, y: torch.Tensor, R: float | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _violation(self, x: torch.Tensor, R: float | torch.Tensor) -> torch.Tensor:
        """How far ``x`` is from satisfying the constraints (0 inside), shape ``(..., 1)``."""
        raise NotImplementedError

    # -- the public API ---------------------------------------------------------------------
    def lmo(self, g: torch.Tensor) -> torch.Tensor:
        """``argmin_{s in Q} <s, g>`` (tie rule: lowest index; zero rule: see the module doc)."""
        g = _check_vector("g", g)
        with torch.no_grad():
            return self._lmo(g, self._R(g))

    def support(self, g: torch.Tensor) -> torch.Tensor:
        """``min_{s in Q} <s, g>`` in closed form, shape ``()`` or ``(B,)``."""
        g = _check_vector("g", g)
        with torch.no_grad():
            return self._support(g, self._R(g)).squeeze(-1)

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """The Euclidean projection of ``y`` onto ``Q`` (a new tensor)."""
        y = _check_vector("y", y)
        with torch.no_grad():
            return self._project(y, self._R(y))

    def fw_gap(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``max_{y in Q} <grad, x - y> = <grad, x> - support(grad)``, shape ``()`` or ``(B,)``."""
        x = _check_vector("x", x)
        grad = _check_same_shape("grad", grad, x, "x")
        with torch.no_grad():
            return _dot(grad, x) - self._support(grad, self._R(grad)).squeeze(-1)

    def contains(self, x: torch.Tensor, atol: float | None = None) -> torch.Tensor:
        """Whether ``x`` lies in ``Q`` up to ``atol`` (bool, shape ``()`` or ``(B,)``)."""
        x = _check_vector("x", x)
        R = self._R(x)
        if atol is None:
            r = R.amax().item() if isinstance(R, torch.Tensor) else R
            atol = 4 * x.shape[-1] * torch.finfo(x.dtype).eps * max(float(r), 1.0)
        check_nonnegative("atol", atol)
        with torch.no_grad():
            return (self._violation(x, R) <= atol).squeeze(-1)

    def diameter(self, d: int) -> float | torch.Tensor:
        """``max_{x, y in Q} ||x - y||_2`` in ``R^d`` (per run when the radius is a tensor)."""
        d = check_int_at_least("d", d, 1)
        return self._diameter_factor(d) * self.radius

    def _diameter_factor(self, d: int) -> float:
        return 2.0


@dataclass(frozen=True)
class Simplex(ConstraintSet):
    """``{x >= 0, sum_i x_i = R}`` (``R = 1``: the probability simplex)."""

    kind: ClassVar[str] = "simplex"

    def _lmo(self, g, R):
        i = torch.argmin(g, dim=-1, keepdim=True)  # the first minimum: lowest index
        s = torch.zeros_like(g)
        return s.scatter_(-1, i, torch.ones_like(i, dtype=g.dtype) * R)

    def _support(self, g, R):
        return R * g.amin(dim=-1, keepdim=True)

    def _project(self, y, R):
        return _simplex_projection(y, R)

    def _violation(self, x, R):
        negative = (-x).clamp(min=0).amax(dim=-1, keepdim=True)
        return torch.maximum(negative, (x.sum(dim=-1, keepdim=True) - R).abs())

    def _diameter_factor(self, d):
        return math.sqrt(2.0) if d >= 2 else 0.0


@dataclass(frozen=True)
class L1Ball(ConstraintSet):
    """``{||x||_1 <= R}``."""

    kind: ClassVar[str] = "l1"

    def _lmo(self, g, R):
        i = torch.argmax(g.abs(), dim=-1, keepdim=True)  # the first maximum: lowest index
        gi = g.gather(-1, i)
        ones = torch.ones_like(gi)
        value = torch.where(gi < 0, ones, -ones) * R  # -R sign(g_i), sign(0) read as +1
        return torch.zeros_like(g).scatter_(-1, i, value)

    def _support(self, g, R):
        return -R * _scale(g)

    def _project(self, y, R):
        inside = y.abs().sum(dim=-1, keepdim=True) <= R
        outside = torch.sign(y) * _simplex_projection(y.abs(), R)
        return torch.where(inside, y, outside)

    def _violation(self, x, R):
        return (x.abs().sum(dim=-1, keepdim=True) - R).clamp(min=0)


@dataclass(frozen=True)
class L2Ball(ConstraintSet):
    """``{||x||_2 <= R}``."""

    kind: ClassVar[str] = "l2"

    def _lmo(self, g, R):
        m = _scale(g)
        e1 = torch.zeros_like(g)
        e1[..., 0] = 1.0
        u = torch.where(m > 0, g / torch.where(m > 0, m, torch.ones_like(m)), e1)  # g = 0: e_1
        return u * (-R / torch.linalg.vector_norm(u, dim=-1, keepdim=True))

    def _support(self, g, R):
        return -R * _norm2(g)

    def _project(self, y, R):
        n = _norm2(y)
        outside = n > R
        factor = R / torch.where(outside, n, torch.ones_like(n))
        return torch.where(outside, y * factor, y)

    def _violation(self, x, R):
        return (_norm2(x) - R).clamp(min=0)


_KINDS = {cls.kind: cls for cls in (Simplex, L1Ball, L2Ball)}


def make_set(kind: str, radius: float | torch.Tensor = 1.0) -> ConstraintSet:
    """The set named ``kind`` (``"simplex"``, ``"l1"`` or ``"l2"``) of the given radius."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    return _KINDS[kind](radius)


def frank_wolfe_move(x: torch.Tensor, s: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """``x <- x + gamma (s - x)`` in place (``gamma in [0, 1]``, a number or per-run tensor); returns ``x``.

    Computed as written (``s - x``, times ``gamma``, added to ``x``), not with ``torch.lerp``,
    whose formula for ``gamma >= 0.5`` (``s - (s - x)(1 - gamma)``) rounds differently."""
    _check_vector("x", x)
    _check_same_shape("s", s, x, "x")
    check_in_range("gamma", gamma, 0.0, 1.0, low_closed=True, high_closed=True)
    g = per_run("gamma", gamma, tuple(x.shape[:-1]), 1, x)
    with torch.no_grad():
        return x.add_(g * (s - x))


def projected_step(x: torch.Tensor, direction: torch.Tensor, gamma: float | torch.Tensor,
                   Q: ConstraintSet) -> torch.Tensor:
    """``x <- Q.project(x - gamma direction)`` in place (``gamma >= 0``, number or per-run tensor); returns ``x``."""
    _check_vector("x", x)
    _check_same_shape("direction", direction, x, "x")
    check_nonnegative("gamma", gamma)
    if not isinstance(Q, ConstraintSet):
        raise ValueError(f"Q must be a ConstraintSet, got {type(Q).__name__}")
    g = per_run("gamma", gamma, tuple(x.shape[:-1]), 1, x)
    with torch.no_grad():
        return x.copy_(Q.project(x - g * direction))


def _check_k_d(k: int, d: int) -> tuple[int, int]:
    return check_int_at_least("k", k, 0), check_int_at_least("d", d, 1)


def fw_step_deterministic(k: int, d: int) -> float:
    """``gamma_k = 4 / (k + 8 d)``: FW + JAGUAR-d (arXiv 2409.10442), ``k = 0, 1, ...``."""
    k, d = _check_k_d(k, d)
    return 4.0 / (k + 8 * d)


def fw_step_stochastic(k: int, d: int) -> float:
    """``gamma_k = 4 / (k + 8 d^{3/2})``: FW + JAGUAR-s (arXiv 2409.10442), ``k = 0, 1, ...``."""
    k, d = _check_k_d(k, d)
    return 4.0 / (k + 8 * d * math.sqrt(d))


def momentum_stochastic(k: int, d: int) -> float:
    """``eta_k = 4 / (k + 8 d^{3/2})^{2/3}``: JAGUAR-s momentum (arXiv 2409.10442), in ``(0, 1]``.

    The power is taken as ``cbrt(.)^2`` (``8^{2/3}`` by ``**`` is ``3.9999999999999996``, which
    would give ``eta_0 > 1`` for ``d = 1``).
    """
    k, d = _check_k_d(k, d)
    return 4.0 / _cbrt(k + 8 * d * math.sqrt(d)) ** 2


# math.cbrt is Python >= 3.11; on 3.10 ``v ** (1/3)`` (exact for 8 = 8 d^{3/2} at d = 1, k = 0).
_cbrt = getattr(math, "cbrt", lambda v: v ** (1.0 / 3.0))
