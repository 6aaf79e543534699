"""Stochastic and noisy zero-order oracles with exactly known constants (Assumptions 2 and 3).

Gradient noise (Assumption 2)
-----------------------------
``f(x, xi) = f(x) + <xi, x>`` with ``xi ~ N(0, diag(s^2))`` over the event shape
and ``sum_i s_i^2 = sigma^2``. Then ``E f(x, xi) = f(x)``, ``grad f(x, xi) =
grad f(x) + xi`` and

    ``E ||grad f(x, xi) - grad f(x)||_2^2 = E ||xi||^2 = sum_i s_i^2 = sigma^2``  (exactly, at every x);

``<xi, x>`` is linear, so ``L(xi) = L`` and ``E L(xi)^2 = L^2``. The variance
profile ``s`` (``sigma_profile``):

* ``"uniform"``: ``s_i = sigma / sqrt(d)``;
* ``"single"``: all the variance on flat coordinate 0 (``s_0 = sigma``);
* ``"harmonic"``: ``s_i^2 = sigma^2 (1/(i+1)) / H_d`` over flat indices, ``H_d = sum_{i<d} 1/(i+1)``.

``xi = s * z``, ``z ~ N(0, I)``: runs with the same generator state but
different ``sigma`` see the same ``z`` (common random numbers). No draw happens
when ``sigma == 0``.

Oracle noise (Assumption 3)
---------------------------
``f^(x, xi) = f(x, xi) + delta``, with ``|delta| <= Delta`` always:

================  ======================================================  =========================
``delta_mode``    ``delta``                                               ``E|delta|^2``
================  ======================================================  =========================
``"none"``        ``0``                                                   ``0``
``"uniform"``     i.i.d. ``U[-Delta, Delta]`` per call (and per run),     ``Delta^2 / 3``
                  drawn from the iteration's generator
``"quantize"``    ``f^ = 2 Delta * round(f(x, xi) / (2 Delta))`` (values  ``<= Delta^2`` (about
                  on a grid of step ``2 Delta``; deterministic)           ``Delta^2/3`` when ``f``
                                                                          spans many cells)
``"adversarial"`` ``-Delta * sign(<grad f(x_t), x - x_t>)``, ``x_t`` the  ``Delta^2`` off the
                  iterate the iteration was drawn at (deterministic)      hyperplane through
                                                                          ``x_t`` normal to
                                                                          ``grad f(x_t)``; 0 on it
================  ======================================================  =========================

The adversarial mode is the worst case for two-point estimates: for a central
difference along ``e_i`` it adds ``(delta(x_t + tau e_i) - delta(x_t - tau e_i)) / (2 tau)
= -(Delta / tau) sign(partial_i f(x_t))`` (for a direction ``z``:
``-(Delta / tau) sign(<grad f(x_t), z>)``), shrinking the estimate towards and past
zero. ``delta(x_t) = 0``.

An iteration's oracle: two-point and one-point feedback
-------------------------------------------------------
``feedback="two_point"`` (TPF, the default): :meth:`StochasticOracle.iteration` draws
``xi^t`` ONCE (shape of ``x_t``, batch dimensions included) and returns a
:class:`NoisyIteration` whose ``value`` / ``grad`` use that same ``xi^t`` on every call,
as the two-point proofs require.

``feedback="one_point"`` (OPF, arXiv 2409.10442): ``iteration`` draws nothing; EVERY
``value`` (and ``grad``) call draws its own ``xi`` (shape of the queried ``x``) from the
iteration's generator, so the two calls of one difference see independent ``xi+`` and
``xi-`` (still two calls per difference). Both follow the ``IterationOracle`` protocol of
``docs/architecture.md``.

Function-value noise ``sigma_f``. One call's value noise is ``f(x, xi) - f(x) = <xi, x>``,
of variance ``sigma_f(x)^2 = sum_i s_i^2 x_i^2`` (:meth:`StochasticOracle.sigma_f`;
``<= sigma^2 ||x||_inf^2``, ``= sigma^2 ||x||^2 / d`` for the uniform profile). It depends on
``x``, so the noise does not cancel in a difference under either feedback (unlike noise
added independently of ``x``, which cancels exactly under TPF). For the central difference
along ``e_i`` (``x+- = x +- tau e_i``) the noise term is

* TPF: ``<xi, x+ - x->/(2 tau) = xi_i``: variance ``s_i^2`` (no ``1/tau``; ``sigma_f = 0``
  in the paper's TPF constants);
* OPF: ``(<xi+, x+> - <xi-, x->)/(2 tau)``: variance
  ``(sigma_f(x+)^2 + sigma_f(x-)^2) / (4 tau^2)`` -- the paper's ``sigma_f / tau`` term.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import torch
from torch import Tensor

from zotheory._checks import check_choice, check_nonnegative

from .problems import Problem, _like

__all__ = ["StochasticOracle", "NoisyIteration", "DELTA_MODES", "SIGMA_PROFILES", "FEEDBACKS"]

DELTA_MODES = ("none", "uniform", "quantize", "adversarial")
FEEDBACKS = ("two_point", "one_point")
SIGMA_PROFILES = ("uniform", "single", "harmonic")

_DTYPE = torch.float64


def _number(name: str, value: object) -> float:
    if not isinstance(value, Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a real Python number, got {value!r}")
    return float(value)


def _constant(name: str, value: object) -> float | Tensor:
    """sigma / Delta: a number, or a 1-D tensor of per-run values (batched runs), all >= 0."""
    if isinstance(value, Tensor):
        if value.ndim != 1 or not value.is_floating_point():
            raise ValueError(f"{name} must be a number or a 1-D float tensor of per-run values, got {value!r}")
        check_nonnegative(name, value)
        return value.detach().to(_DTYPE)
    v = _number(name, value)
    check_nonnegative(name, v)
    return v


def _per_run(c: float | Tensor, like: Tensor) -> float | Tensor:
    """A constant broadcast against a batch-shaped tensor ``like``."""
    if isinstance(c, Tensor):
        return c.reshape(c.shape + (1,) * (like.ndim - c.ndim)).to(device=like.device)
    return torch.tensor(c, dtype=_DTYPE, device=like.device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class StochasticOracle:
    """Noisy stochastic zero-order oracle around a :class:`~zotheory.synthetic.problems.Problem`.

    Parameters
    ----------
    problem:
        The deterministic ``f`` (its ``L`` is also ``L(xi)``).
    sigma:
        ``sqrt(E ||grad f(x, xi) - grad f(x)||^2)``, exactly (>= 0). A number, or a
        1-D tensor with one value per batched run (the batched runner uses this).
    Delta:
        Bound on the oracle noise, ``|delta| <= Delta`` (>= 0); a number or one value
        per batched run, like ``sigma``. Must be 0 when
        ``delta_mode == "none"``; with ``Delta == 0`` every mode is noise-free.
    delta_mode:
        One of :data:`DELTA_MODES` (see the module doc for each mode's ``E|delta|^2``).
    sigma_profile:
        One of :data:`SIGMA_PROFILES`: how ``sigma^2`` splits over coordinates.
    generator_device:
        Device of the generators passed to :meth:`iteration` (draws are made
        there in float64, then moved to ``x``'s device and dtype).
    feedback:
        One of :data:`FEEDBACKS`: ``"two_point"`` (one ``xi`` per iteration, the default)
        or ``"one_point"`` (one ``xi`` per oracle call); see the module doc.

    Attributes: ``problem``, ``sigma``, ``Delta``, ``delta_mode``, ``sigma_profile``,
    ``generator_device``, ``feedback``, ``noise_std`` (``s``, float64, event shape), ``L``.
    """

    def __init__(self, problem: Problem, sigma: float = 0.0, Delta: float = 0.0,
                 delta_mode: str = "none", sigma_profile: str = "uniform",
                 generator_device: str | torch.device = "cpu", feedback: str = "two_point") -> None:
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a zotheory.synthetic.problems.Problem, got {type(problem).__name__}")
        self.problem = problem
        self.sigma = _constant("sigma", sigma)
        self.Delta = _constant("Delta", Delta)
        self.has_sigma = bool(torch.as_tensor(self.sigma).gt(0).any())
        self.has_delta = bool(torch.as_tensor(self.Delta).gt(0).any())
        self.delta_mode = check_choice("delta_mode", delta_mode, DELTA_MODES)
        self.sigma_profile = check_choice("sigma_profile", sigma_profile, SIGMA_PROFILES)
        self.feedback = check_choice("feedback", feedback, FEEDBACKS)
        if self.delta_mode == "none" and self.has_delta:
            raise ValueError(
                f"Delta must be 0 when delta_mode is 'none' (got Delta={self.Delta!r}); "
                f"choose delta_mode from {sorted(DELTA_MODES)}"
            )
        try:
            self.generator_device = torch.device(generator_device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"generator_device must name a torch device, got {generator_device!r}") from err
        self.noise_std = self._profile().to(self.generator_device)

    def _profile(self) -> Tensor:
        d, shape = self.problem.d, self.problem.shape
        if self.sigma_profile == "uniform":
            var = torch.full((d,), 1.0 / d, dtype=_DTYPE)
        elif self.sigma_profile == "single":
            var = torch.zeros(d, dtype=_DTYPE)
            var[0] = 1.0
        else:  # harmonic
            var = 1.0 / torch.arange(1, d + 1, dtype=_DTYPE)
            var = var / var.sum()
        std = var.sqrt().reshape(shape)
        if isinstance(self.sigma, Tensor):  # one sigma per batched run: shape (B, *shape)
            return self.sigma.reshape(self.sigma.shape + (1,) * len(shape)) * std
        return self.sigma * std

    @property
    def L(self) -> float:
        """``L(xi) = L`` for every ``xi`` (the noise is linear in ``x``)."""
        return self.problem.L

    def sigma_f(self, x: Tensor) -> Tensor:
        """``sqrt(Var f(x, xi)) = sqrt(sum_i s_i^2 x_i^2)`` per run (float64, shape ``batch``):
        the function-value noise of one call at ``x`` (module doc, "sigma_f")."""
        self.problem._check_x(x)
        s = self.noise_std.to(x.device)
        event = tuple(range(-len(self.problem.shape), 0))
        return (s * s * x.detach().to(_DTYPE) ** 2).sum(dim=event).sqrt()

    def draw_xi(self, shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
        """One draw ``xi = s * z``, ``z ~ N(0, I)`` of ``shape`` (that of ``like``), as ``like``'s dtype."""
        z = torch.randn(shape, generator=generator, dtype=_DTYPE, device=self.generator_device)
        s = self.noise_std  # z is a fresh draw: scaled in its own storage when the shapes allow
        return _like(z.mul_(s) if s.shape == z.shape else z * s, like)

    @property
    def needs_generator(self) -> bool:
        return self.has_sigma or (self.delta_mode == "uniform" and self.has_delta)

    def _check_generator(self, generator: torch.Generator | None) -> None:
        if generator is None:
            if self.needs_generator:
                raise ValueError(
                    "generator must be a torch.Generator when sigma > 0 or delta_mode == 'uniform', got None"
                )
            return
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not _same_device(generator.device, self.generator_device):
            raise ValueError(
                f"generator must live on generator_device={str(self.generator_device)!r}, "
                f"got a generator on {str(generator.device)!r}"
            )

    def iteration(self, x_t: Tensor, generator: torch.Generator | None = None) -> NoisyIteration:
        """Draw ``xi^t`` once (shape of ``x_t``) and return the iteration's oracle.

        ``x_t`` (and ``grad f(x_t)`` in adversarial mode) is snapshotted, so the
        estimator may perturb ``x_t`` in place afterwards.
        """
        self.problem._check_x(x_t)
        self._check_generator(generator)
        xi = None
        if self.has_sigma and self.feedback == "two_point":
            xi = self.draw_xi(tuple(x_t.shape), generator, x_t)
        return NoisyIteration(self, xi, x_t=x_t, generator=generator)

    def iteration_with(self, xi: Tensor | None = None, *, x_t: Tensor | None = None,
                       generator: torch.Generator | None = None) -> NoisyIteration:
        """The iteration's oracle for an explicitly supplied ``xi`` (``None``: no gradient noise).

        ``x_t`` is required in adversarial mode, ``generator`` in uniform mode.
        """
        if xi is not None:
            if self.feedback == "one_point":
                raise ValueError("xi cannot be given with feedback='one_point' (every call draws its own xi)")
            if not isinstance(xi, torch.Tensor) or not xi.is_floating_point():
                raise ValueError(f"xi must be a floating-point tensor or None, got {xi!r}")
            self.problem._check_x(xi)
        if x_t is not None:
            self.problem._check_x(x_t)
        if self.delta_mode == "adversarial" and self.has_delta and x_t is None:
            raise ValueError("x_t must be given in delta_mode 'adversarial' (the iterate the adversary sees)")
        if self.feedback == "one_point" and self.has_sigma:
            self._check_generator(generator)
            if generator is None:
                raise ValueError("generator must be a torch.Generator with feedback='one_point' and sigma > 0, got None")
        if self.delta_mode == "uniform" and self.has_delta:
            self._check_generator(generator)
            if generator is None:
                raise ValueError("generator must be a torch.Generator in delta_mode 'uniform', got None")
        return NoisyIteration(self, xi, x_t=x_t, generator=generator)

    def constants(self) -> dict[str, Any]:
        """Noise constants for tidy result rows."""
        return {"sigma": self.sigma, "Delta": self.Delta, "delta_mode": self.delta_mode,
                "sigma_profile": self.sigma_profile, "feedback": self.feedback}

    def __repr__(self) -> str:
        return (f"StochasticOracle({self.problem!r}, sigma={self.sigma!r}, Delta={self.Delta!r}, "
                f"delta_mode={self.delta_mode!r}, sigma_profile={self.sigma_profile!r}, "
                f"feedback={self.feedback!r})")


class NoisyIteration:
    """One iteration's oracle: ``xi^t`` fixed, ``value`` = ``f^(x, xi^t)``, ``grad`` = ``grad f(x, xi^t)``.

    Attributes: ``xi`` (``None`` when ``sigma == 0``), ``x_t`` and ``grad_t``
    (snapshots, adversarial mode only), ``calls`` (number of ``value`` calls).
    """

    def __init__(self, oracle: StochasticOracle, xi: Tensor | None, *, x_t: Tensor | None,
                 generator: torch.Generator | None) -> None:
        self.oracle = oracle
        self.problem = oracle.problem
        self.xi = xi
        self.generator = generator
        self.calls = 0
        self._event_dims = tuple(range(-len(self.problem.shape), 0))
        self.x_t: Tensor | None = None
        self.grad_t: Tensor | None = None
        if oracle.delta_mode == "adversarial" and oracle.has_delta:
            if x_t is None:
                raise ValueError("x_t must be given in delta_mode 'adversarial' (the iterate the adversary sees)")
            self.x_t = x_t.detach().clone()
            self.grad_t = self.problem.grad(self.x_t)

    def _xi_for_call(self, x: Tensor) -> Tensor | None:
        """``xi^t`` (TPF), or a fresh draw for this call (OPF; ``None`` when ``sigma == 0``)."""
        o = self.oracle
        if o.feedback == "one_point" and o.has_sigma:
            return o.draw_xi(tuple(x.shape), self.generator, x)
        return self.xi

    def stochastic_value(self, x: Tensor) -> Tensor:
        """``f(x, xi) = f(x) + <xi, x>`` (no oracle noise), ``xi`` = ``xi^t`` (TPF) or this
        call's own draw (OPF); shape ``batch``."""
        v = self.problem.value(x)
        xi = self._xi_for_call(x)
        if xi is not None:
            v = v + (_like(xi, x) * x).sum(dim=self._event_dims)
        return v

    def _delta(self, x: Tensor, batch_shape: torch.Size) -> Tensor | None:
        """The oracle noise at ``x`` for the modes that do not depend on ``f(x, xi)``."""
        o = self.oracle
        if not o.has_delta or o.delta_mode in ("none", "quantize"):
            return None
        if o.delta_mode == "uniform":
            u = torch.rand(tuple(batch_shape), generator=self.generator, dtype=_DTYPE,
                           device=o.generator_device)
            return (_per_run(o.Delta, u) * (2.0 * u - 1.0)).to(dtype=x.dtype, device=x.device)
        # adversarial
        g = self.grad_t.to(dtype=x.dtype, device=x.device)
        inner = (g * (x - self.x_t.to(dtype=x.dtype, device=x.device))).sum(dim=self._event_dims)
        return -_per_run(o.Delta, inner).to(dtype=inner.dtype, device=inner.device) * torch.sign(inner)

    def value(self, x: Tensor) -> Tensor:
        """``f^(x, xi^t) = f(x, xi^t) + delta``; shape ``batch``."""
        self.calls += 1
        v = self.stochastic_value(x)
        o = self.oracle
        if o.delta_mode == "quantize" and o.has_delta:
            step = (2.0 * _per_run(o.Delta, v)).to(dtype=v.dtype, device=v.device)
            safe = torch.where(step > 0, step, torch.ones_like(step))
            return torch.where(step > 0, safe * torch.round(v / safe), v)
        delta = self._delta(x, v.shape)
        return v if delta is None else v + delta

    def grad(self, x: Tensor) -> Tensor:
        """``grad f(x, xi) = grad f(x) + xi`` (first-order methods; no oracle noise), ``xi`` as in
        :meth:`stochastic_value`."""
        g = self.problem.grad(x)
        xi = self._xi_for_call(x)
        if xi is not None:
            g = g + _like(xi, x)
        return g
