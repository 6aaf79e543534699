"""The single-run driver and the runner contract.

Algorithms 1 and 2 return ``x^{N(T)}`` with ``N(T) ~ Uniform{1..T}``; Theorems 1
and 2 bound ``E ||grad f(x^{N(T)})||``, which equals the trajectory average
``(1/T) sum_t E ||grad f(x^t)||``. :func:`run` provides both: the realised output
``x_out = x^{N(T)}`` (``N`` drawn up front from its own generator, so no iterate is
stored) and, when the caller supplies the true gradient (synthetic problems do),
exact trajectory averages of ``||grad f(x^t)||_1``, ``||.||_2`` and, for matrices,
the nuclear norm, over ``t = 0..T-1`` (the proofs' sum), plus the norms at ``x^{N(T)}``.

Streams: ``generator`` drives the algorithm's draws (coordinates, directions),
``noise_generator`` the oracle's stochastic variable, ``output_generator`` the
index ``N(T)``; by default the last two are seeded from ``generator``'s initial
seed (+1, +2), so one seed fixes the whole run bitwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from ._checks import check_int_at_least
from .algorithms import get_algorithm


class IterationOracle(Protocol):
    def value(self, x: torch.Tensor) -> torch.Tensor: ...
    def grad(self, x: torch.Tensor) -> torch.Tensor: ...


class StochasticOracle(Protocol):
    def iteration(self, x: torch.Tensor, generator: torch.Generator) -> IterationOracle: ...


class DeterministicOracle:
    """Wrap a plain function ``f(x) -> scalar`` as an oracle (gradient by autograd, for FO methods)."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.f = f

    def iteration(self, x: torch.Tensor, generator: torch.Generator) -> "DeterministicOracle":
        return self

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = x.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.f(y), y)
        return g


@dataclass
class RunResult:
    x_out: torch.Tensor
    """The pseudocode's output x^{N(T)}."""
    N: int
    """N(T) ~ Uniform{1..T}."""
    x_last: torch.Tensor
    oracle_calls: int
    avg_grad_norms: dict[str, float] | None
    """(1/T) sum_{t=0}^{T-1} ||grad f(x^t)|| (keys l1, l2, and nuc for matrices) if true_grad was given."""
    out_grad_norms: dict[str, float] | None
    """Norms of grad f(x^{N(T)}) if true_grad was given."""
    state: Any


def grad_norms(g: torch.Tensor) -> dict[str, float]:
    """l1, l2 (Frobenius) and, for a matrix, nuclear norm of a gradient."""
    out = {"l1": float(g.abs().sum()), "l2": float(g.norm())}
    if g.ndim == 2:
        out["nuc"] = float(torch.linalg.matrix_norm(g, ord="nuc"))
    return out


def _seeded(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed % (2**63 - 1))
    return g


def run(
    algorithm: str,
    x0: torch.Tensor,
    oracle: StochasticOracle | Callable[[torch.Tensor], torch.Tensor],
    T: int,
    *,
    gamma: float | Callable[[int], float],
    generator: torch.Generator,
    true_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
    noise_generator: torch.Generator | None = None,
    output_generator: torch.Generator | None = None,
    **hyperparameters: Any,
) -> RunResult:
    """Run ``algorithm`` for ``T`` iterations from ``x0`` (not modified) on one problem.

    ``oracle`` is an object with ``iteration(x, generator)`` returning one
    iteration's oracle (``value``/``grad`` with the stochastic variable fixed), or a
    plain function ``f(x)`` (deterministic). ``gamma`` is a constant or a schedule
    ``t -> gamma_t``. Remaining keyword arguments go to the algorithm's ``step``.
    """
    T = check_int_at_least("T", T, 1)
    algo = get_algorithm(algorithm)
    if not hasattr(oracle, "iteration"):
        oracle = DeterministicOracle(oracle)  # type: ignore[arg-type]
    seed = generator.initial_seed()
    noise_generator = noise_generator or _seeded(seed + 1)
    output_generator = output_generator or _seeded(seed + 2)
    N = int(torch.randint(1, T + 1, (1,), generator=output_generator))

    x = x0.detach().clone()
    state = algo.init(x)
    sums: dict[str, float] | None = {} if true_grad is not None else None
    out_norms: dict[str, float] | None = None
    x_out: torch.Tensor | None = None
    for t in range(T):
        if sums is not None:
            for k, v in grad_norms(true_grad(x)).items():  # type: ignore[misc]
                sums[k] = sums.get(k, 0.0) + v
        g_t = gamma(t) if callable(gamma) else gamma
        state = algo.step(x, oracle.iteration(x, noise_generator), state, gamma=g_t, generator=generator,
                          **hyperparameters)
        if t + 1 == N:
            x_out = x.clone()
            if true_grad is not None:
                out_norms = grad_norms(true_grad(x))
    calls = algo.oracle_calls_per_step(hyperparameters) * T
    avg = {k: v / T for k, v in sums.items()} if sums is not None else None
    return RunResult(x_out=x_out if x_out is not None else x.clone(), N=N, x_last=x, oracle_calls=calls, avg_grad_norms=avg,
                     out_grad_norms=out_norms, state=state)
