"""ZO-SGD-Cons: the conservative ZO-SGD step (Kim et al. 2021, as used in ZO-Bench).

Pseudocode (the "conservative" update of the ZO-Bench, Zhang et al. 2024,
attributed to Kim et al. 2021)::

    for t = 0, 1, ..., T - 1:
        draw z^t ~ N(0, I); draw xi^t
        g^t = ( f^(x^t + tau z^t, xi^t) - f^(x^t - tau z^t, xi^t) ) / (2 tau)
        x^{t+1} = argmin_{y in {x^t, x^t - gamma g^t z^t, x^t + gamma g^t z^t}} f^(y, xi^t)

As a direction (move ``x <- x - gamma D``): ``D = 0`` (stay), ``D = g z`` (the ZO-SGD
step) or ``D = -g z`` (the opposite step), whichever candidate has the smallest
oracle value. Ties go to the earlier candidate in the order
``[x^t, x^t - gamma g z, x^t + gamma g z]`` (so a tie with ``x^t`` stays put).

Cost: 2 (estimate) + 3 (candidates, via ``estimators.evaluate_at``) = 5 oracle calls
per step. This rule's definition needs ``gamma`` (the candidates depend on it), so
``step`` computes the candidate values and ``update`` takes them.

Symbols -> arguments

============  =================================================================
paper         code
============  =================================================================
eta / gamma   ``step(..., gamma=)``
mu / tau      ``step(..., tau=)``
g z           ``DirectionEstimate`` (Gaussian two-point, seed trick)
f^(y, xi^t)   ``update(..., candidate_values=)``: shape ``(3, *batch)``, order as above
============  =================================================================

Citations: B. Kim, H. Cai, D. McKenzie, W. Yin, "Curvature-Aware Derivative-Free
Optimization" (2021); Y. Zhang, P. Li, J. Hong, J. Li, Y. Zhang,
W. Zheng, P.-Y. Chen, J. D. Lee, W. Yin, M. Hong, Z. Wang, S. Liu, T. Chen,
"Revisiting Zeroth-Order Optimization for Memory-Efficient LLM Fine-Tuning: A
Benchmark", ICML 2024 (arXiv:2402.11592).

Deviations / interpretation
---------------------------
Kim et al.'s CARS chooses a curvature-aware step length from extra function values;
the LLM benchmark the paper follows (ZO-Bench) uses the simpler three-candidate
"conservative" rule above under the name ZO-SGD-Cons, and that is what this module
implements. Interpretation choices, stated: all five oracle calls use the same
xi^t; f(x^t) is evaluated (not reused from the estimate, which never evaluates at
x^t); ties keep the earlier candidate.

Lists of tensors (a model's parameters, :mod:`zotheory.algorithms._lists`): one estimate
over the whole list; the three candidates move every tensor by ``0, -gamma_i g z_i,
+gamma_i g z_i`` together (one choice for the whole list: the oracle value is the model's
loss). The candidates' displacements are materialised (two copies of the tensors during a
step). ``weight_decay`` (MeZO's, in the move) is applied after the choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from typing import Any, Sequence

import torch

from .._checks import check_positive
from ..estimates import DirectionEstimate
from . import _lists
from ._zo_common import (
    ParamSpec,
    batch_shape,
    check_batch_dims,
    check_direction_step,
    check_finite_values,
    dense_direction,
    direction_draw,
    move,
    per_run,
)

__all__ = ["ZOSGDConsState", "init", "update", "step", "CANDIDATE_SIGNS"]

# Candidate k is x - gamma * CANDIDATE_SIGNS[k] * g z.
CANDIDATE_SIGNS = (0.0, 1.0, -1.0)


@dataclass
class ZOSGDConsState:
    param: ParamSpec
    step: int = 0
    batch_dims: int = 0


def init(x: torch.Tensor | Sequence[torch.Tensor], *, batch_dims: int = 0) -> Any:
    if _lists.is_list(x):
        return _lists.init_states(x, init)
    check_batch_dims(x, batch_dims)
    return ZOSGDConsState(param=ParamSpec.of(x), step=0, batch_dims=batch_dims)


def update(
    estimate: DirectionEstimate,
    state: ZOSGDConsState,
    *,
    candidate_values: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, ZOSGDConsState]:
    """The chosen direction ``c * g z`` with ``c`` in {0, +1, -1} per run.

    ``candidate_values[k]`` is the oracle value at ``x - gamma * CANDIDATE_SIGNS[k] * g z``
    (shape ``(3, *batch_shape)``); the first minimal candidate wins.
    """
    vals = torch.as_tensor(candidate_values)
    batch = tuple(state.param.shape[: state.batch_dims])
    if tuple(vals.shape) != (3,) + batch:
        raise ValueError(
            f"candidate_values must have shape (3, *batch_shape) = {(3,) + batch}, "
            f"got {tuple(vals.shape)}"
        )
    check_finite_values("candidate_values", vals)
    gz = dense_direction(estimate, state.param)
    signs = torch.tensor(CANDIDATE_SIGNS, dtype=gz.dtype, device=gz.device)
    choice = torch.argmin(vals, dim=0)  # first minimum: ties keep the earlier candidate
    c = signs[choice.to(gz.device)]
    c = c.reshape(batch + (1,) * (gz.ndim - len(batch)))
    return c * gz, dataclasses.replace(state, step=state.step + 1)


def step(
    x: torch.Tensor | Sequence[torch.Tensor],
    oracle,
    state: Any,
    *,
    gamma: float | torch.Tensor | Sequence[float],
    tau: float | torch.Tensor,
    generator: torch.Generator | None = None,
    restore: str = "saved",
    weight_decay: float | torch.Tensor | Sequence[float] = 0.0,
    batch_dims: int = 0,
    seed: int | None = None,
    z: torch.Tensor | Sequence[torch.Tensor] | None = None,
    inplace: bool = True,
) -> Any:
    """One ZO-SGD-Cons iteration (5 oracle calls); ``x`` (a tensor or a list) moved in place."""
    from .. import estimators

    if _lists.is_list(x):
        xs, states, gammas, decay = _lists.prologue(x, state, gamma, weight_decay, batch_dims)
        check_positive("tau", tau)
        seed = direction_draw(generator, seed, z)
        closure = _lists.closure_of(oracle, xs)
        est = estimators.gaussian_two_point(xs, closure, tau, seed=seed, z=z, restore=restore)
        # The same products the moves use, so the accepted candidate is bitwise x^{t+1}.
        deltas = [(g * gz).to(t.dtype) for g, gz, t in zip(gammas, est.dense(xs), xs)]
        zero = [torch.zeros((), dtype=t.dtype, device=t.device) for t in xs]
        values = estimators.evaluate_at(xs, closure, [zero, [-d for d in deltas], deltas])
        del deltas
        return _lists.apply_directions(
            xs, states, [est], lambda i, t, e, s: (t, *update(e[0], s, candidate_values=values, inplace=True)),
            gamma=gammas, weight_decay=decay, elementwise=False)
    check_direction_step(x, state, gamma, tau, batch_dims, weight_decay)
    seed = direction_draw(generator, seed, z)
    closure = _lists.closure_of(oracle, x)
    est = estimators.gaussian_two_point(x, closure, tau, seed=seed, z=z, batch_dims=batch_dims, restore=restore)
    gz = dense_direction(est, state.param)
    g = per_run("gamma", gamma, batch_shape(x, batch_dims), x.ndim - batch_dims, gz)
    # The same product the move uses, so the accepted candidate is bitwise x^{t+1}.
    delta = (g * gz).to(x.dtype)
    displacements = [torch.zeros_like(delta), -delta, delta]
    values = estimators.evaluate_at(x, closure, displacements, batch_dims=batch_dims)
    if not isinstance(values, torch.Tensor):
        values = torch.stack([torch.as_tensor(v) for v in values])
    direction, new_state = update(est, state, candidate_values=values, inplace=inplace)
    move(x, gamma, direction, batch_dims, weight_decay)
    return new_state
