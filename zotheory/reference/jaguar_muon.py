"""Literal transcription of Algorithm 2 (JAGUAR Muon, seed 003): one run, float64, a plain loop.

Ground truth for ``tests/test_muon_and_fo_rules.py``: the fast kernel
:func:`zotheory.algorithms.jaguar_muon.step` must follow these iterates step by step
when both draw from generators with the same seed. Nothing here is optimised.

Pseudocode (seed 003)::

    Init: X^0 in R^{m x n}, M^{-1} = 0_{m x n}.
    for t = 0 to T do
        Sample i_t ~ U(1..m), j_t ~ U(1..n);  E^t <- one-hot(i_t, j_t);  sample xi^t
        g <- (f^(X^t + tau E^t, xi^t) - f^(X^t - tau E^t, xi^t)) / (2 tau)
        M^t_{i_t j_t} <- beta M^{t-1}_{i_t j_t} + (1 - beta) g;  every other entry of M keeps its value
        X^{t+1} <- X^t - gamma * Newton_Schulz(M^t, K = ns_steps)
    end for

    Subroutine Newton_Schulz(A, K = 10):
        A^0 <- A / ||A||_F
        for k = 0 to K do  A^{k+1} <- 3/2 A^k - 1/2 A^k (A^k)^T A^k  end for
        Return A^K

Transcription choices (each literal):

* ``for t = 0 to T`` is inclusive: ``T + 1`` iterations, so the returned list is
  ``[X^0, X^1, ..., X^{T+1}]`` (``T + 2`` matrices).
* ``(i_t, j_t)`` is drawn as one flat index ``p = torch.randint(0, m*n, (1,), generator=g)``
  with ``i_t = p // n``, ``j_t = p % n`` (uniform ``p`` <=> independent uniform ``i``, ``j``).
* ``xi^t`` is the iteration index passed to ``f(X, t)``: both oracle calls of one
  iteration see the same ``t``.
* The subroutine's loop also computes ``A^{K+1}``, which it discards; the literal loop
  below does the same (one wasted iteration) and returns ``A^K``.
* Zero matrix: ``||A||_F = 0`` would give ``0/0``; the subroutine returns the zero
  matrix (the same guard as :mod:`zotheory.orthogonalize`; with ``M^{-1} = 0`` this
  can happen only if every sampled difference so far was exactly 0).
"""

from __future__ import annotations

from typing import Callable

import torch


def newton_schulz(A: torch.Tensor, K: int = 10) -> torch.Tensor:
    """The pseudocode's subroutine, line by line."""
    norm = torch.linalg.matrix_norm(A)  # Frobenius
    if norm == 0:
        return torch.zeros_like(A)
    iterates = [A / norm]  # A^0
    for k in range(0, K + 1):  # "for k = 0 to K"
        Ak = iterates[k]
        iterates.append(1.5 * Ak - 0.5 * Ak @ Ak.T @ Ak)  # A^{k+1}
    return iterates[K]  # "Return A^K"


def run(
    f: Callable[[torch.Tensor, int], float | torch.Tensor],
    X0: torch.Tensor,
    T: int,
    gamma: float,
    beta: float,
    tau: float,
    ns_steps: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Iterates ``[X^0, ..., X^{T+1}]`` of Algorithm 2 (float64, one run).

    ``f(X, t)`` is the oracle ``f^(X, xi^t)`` of iteration ``t``; ``generator`` supplies
    the flat index of ``(i_t, j_t)`` at every iteration.
    """
    X = X0.detach().to(torch.float64).clone()
    m, n = X.shape
    M = torch.zeros(m, n, dtype=torch.float64)  # M^{-1} = 0
    iterates = [X.clone()]
    for t in range(0, T + 1):  # "for t = 0 to T"
        p = int(torch.randint(0, m * n, (1,), generator=generator))
        i_t, j_t = p // n, p % n
        E = torch.zeros(m, n, dtype=torch.float64)
        E[i_t, j_t] = 1.0
        f_plus = float(f(X + tau * E, t))
        f_minus = float(f(X - tau * E, t))
        g = (f_plus - f_minus) / (2 * tau)
        M = M.clone()
        M[i_t, j_t] = beta * M[i_t, j_t] + (1 - beta) * g  # all other entries keep their values
        X = X - gamma * newton_schulz(M, K=ns_steps)
        iterates.append(X.clone())
    return iterates
