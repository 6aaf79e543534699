"""Algorithm 1 (JAGUAR SignSGD), transcribed line by line: one run, float64, Python loops.

Ground truth for tests of :mod:`zotheory.algorithms.jaguar_signsgd`. Nothing here is
vectorised or clever; every line is a line of the pseudocode::

    m^{-1} = 0
    for t = 0, ..., T - 1:
        i_t ~ Uniform{1..d}                       <- torch.randint(0, d, (1,), generator=g)
        f_+ = f(x^t + tau e^t, t);  f_- = f(x^t - tau e^t, t)
        grad = (f_+ - f_-) / (2 tau)
        m_{i_t} = beta m_{i_t} + (1 - beta) grad;  m_i unchanged for i != i_t
        x^{t+1} = x^t - gamma sign(m^t)          (every coordinate; sign(0) = 0)

The coordinate is drawn exactly as the fast kernel draws it
(``zotheory.random.sample_coordinates(d, 1, g)`` is ``torch.randint(0, d, (1,), generator=g)``),
so both consume the same random stream. ``f(x, t)`` receives a float64 tensor of
shape ``(d,)`` and the iteration index ``t`` (so a test can hand it xi^t).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def _sign(v: float) -> float:
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    return 0.0


def run(
    f: Callable[[torch.Tensor, int], float],
    x0: Sequence[float] | torch.Tensor,
    T: int,
    *,
    gamma: float,
    beta: float,
    tau: float,
    generator: torch.Generator,
) -> tuple[list[list[float]], list[list[float]]]:
    """Run Algorithm 1 for ``T`` iterations.

    Returns ``(xs, ms)``: ``xs[t]`` is ``x^t`` for ``t = 0..T`` and ``ms[t]`` is
    ``m^t`` (the momentum after iteration ``t``) for ``t = 0..T-1``, as lists of floats.
    """
    x = [float(v) for v in (x0.tolist() if isinstance(x0, torch.Tensor) else x0)]
    d = len(x)
    m = [0.0] * d  # m^{-1} = 0
    xs = [list(x)]
    ms = []
    for t in range(T):
        i = int(torch.randint(0, d, (1,), generator=generator)[0])
        x_plus = list(x)
        x_plus[i] = x[i] + tau
        x_minus = list(x)
        x_minus[i] = x[i] - tau
        f_plus = float(f(torch.tensor(x_plus, dtype=torch.float64), t))
        f_minus = float(f(torch.tensor(x_minus, dtype=torch.float64), t))
        grad = (f_plus - f_minus) / (2 * tau)
        m[i] = beta * m[i] + (1 - beta) * grad
        for j in range(d):
            x[j] = x[j] - gamma * _sign(m[j])
        xs.append(list(x))
        ms.append(list(m))
    return xs, ms
