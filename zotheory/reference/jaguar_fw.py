"""JAGUAR-d / JAGUAR-s with Frank-Wolfe (arXiv 2409.10442), transcribed line by line: one run,
float64, Python loops.

Ground truth for tests of :mod:`zotheory.algorithms.jaguar_fw`. Every line is a line of the
pseudocode (EXTENSIONS.md section 1)::

    h^0 = 0 (or the full difference), g^0 = h^0
    for k = 0, ..., T - 1:
        i ~ Uniform{1..d}                        <- torch.randint(0, d, (1,), generator=gen)
        g_i = (f(x + tau e_i, k) - f(x - tau e_i, k)) / (2 tau)
        JAGUAR-s: rho = h;  rho_i = h_i - d h_i + d g_i        (h BEFORE the replacement)
                  g_j = (1 - eta_k) g_j + eta_k rho_j   for every j
        h_i = g_i                                                (coordinate i replaced)
        D = h (JAGUAR-d) or g (JAGUAR-s)
        s = LMO_Q(D): simplex R e_j, j = argmin_j D_j (lowest index on ties);
                      l1 ball -R sign(D_j) e_j, j = argmax_j |D_j| (sign(0) read as +1)
        x_j = x_j + gamma_k (s_j - x_j)   for every j

``f(x, k)`` receives a float64 tensor of shape ``(d,)`` and the iteration index ``k``.
``gamma`` and ``eta`` are numbers or callables ``k -> number`` (schedules).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def _central(f, x: list[float], i: int, tau: float, k: int) -> float:
    x_plus = list(x)
    x_plus[i] = x[i] + tau
    x_minus = list(x)
    x_minus[i] = x[i] - tau
    f_plus = float(f(torch.tensor(x_plus, dtype=torch.float64), k))
    f_minus = float(f(torch.tensor(x_minus, dtype=torch.float64), k))
    return (f_plus - f_minus) / (2 * tau)


def full_difference(f, x: Sequence[float], tau: float, k: int = 0) -> list[float]:
    """``sum_i (f(x + tau e_i) - f(x - tau e_i)) / (2 tau) e_i``, coordinates in order."""
    x = [float(v) for v in x]
    return [_central(f, x, i, tau, k) for i in range(len(x))]


def lmo(kind: str, D: list[float], R: float) -> list[float]:
    """The simplex or l1-ball LMO at ``D`` (the tie and zero rules of zotheory.constraints)."""
    d = len(D)
    s = [0.0] * d
    if kind == "simplex":
        j = 0
        for r in range(d):
            if D[r] < D[j]:
                j = r
        s[j] = R
    elif kind == "l1":
        j = 0
        for r in range(d):
            if abs(D[r]) > abs(D[j]):
                j = r
        s[j] = -R if D[j] >= 0 else R
    else:
        raise ValueError(f"kind must be 'simplex' or 'l1', got {kind!r}")
    return s


def run(
    f: Callable[[torch.Tensor, int], float],
    x0: Sequence[float] | torch.Tensor,
    T: int,
    *,
    variant: str,
    gamma: float | Callable[[int], float],
    tau: float,
    generator: torch.Generator,
    eta: float | Callable[[int], float] | None = None,
    kind: str = "simplex",
    R: float = 1.0,
    start: str = "zeros",
) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """``T`` iterations of FW + JAGUAR-``variant``; returns ``(xs, hs, gs)``: ``xs[k]`` = x^k
    (k = 0..T), ``hs[k]`` / ``gs[k]`` = h / g after iteration k (``gs`` empty for JAGUAR-d)."""
    x = [float(v) for v in (x0.tolist() if isinstance(x0, torch.Tensor) else x0)]
    d = len(x)
    h = full_difference(f, x, tau) if start == "full" else [0.0] * d
    g = list(h)
    xs, hs, gs = [list(x)], [], []
    for k in range(T):
        i = int(torch.randint(0, d, (1,), generator=generator)[0])
        g_i = _central(f, x, i, tau, k)
        if variant == "s":
            e = eta(k) if callable(eta) else eta
            rho = list(h)
            rho[i] = h[i] - d * h[i] + d * g_i
            for j in range(d):
                g[j] = (1 - e) * g[j] + e * rho[j]
        h[i] = g_i
        D = h if variant == "d" else g
        s = lmo(kind, D, R)
        gam = gamma(k) if callable(gamma) else gamma
        for j in range(d):
            x[j] = x[j] + gam * (s[j] - x[j])
        xs.append(list(x))
        hs.append(list(h))
        if variant == "s":
            gs.append(list(g))
    return xs, hs, gs
