"""ZO-SGD / MeZO, transcribed literally: one run, float64, Python loops.

Ground truth for tests of :mod:`zotheory.algorithms.zo_sgd`::

    for t = 0, ..., T - 1:
        s_t = torch.randint(0, 2**62, (1,), generator=g)        (one seed per step)
        z^t = torch.randn(d, generator=torch.Generator().manual_seed(s_t), dtype=float64)
        f_+ = f(x^t + tau z^t, t);  f_- = f(x^t - tau z^t, t)
        grad = (f_+ - f_-) / (2 tau)
        x^{t+1} = x^t - gamma * (grad * z^t)

The draws are the kernel's: ``zo_sgd.step`` draws the seed with
``_zo_common.draw_seed(generator)`` (the same ``torch.randint`` call) and regenerates
``z`` with ``zotheory.directions.generate_directions`` (a fresh CPU generator seeded
with ``s_t``, ``torch.randn`` of the parameter's shape in float64), written out here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

SEED_HIGH = 2**62


def run(
    f: Callable[[torch.Tensor, int], float],
    x0: Sequence[float] | torch.Tensor,
    T: int,
    *,
    gamma: float,
    tau: float,
    generator: torch.Generator,
) -> list[list[float]]:
    """Run ZO-SGD for ``T`` iterations; returns ``[x^0, ..., x^T]`` as lists of floats."""
    x = [float(v) for v in (x0.tolist() if isinstance(x0, torch.Tensor) else x0)]
    d = len(x)
    xs = [list(x)]
    for t in range(T):
        seed = int(torch.randint(0, SEED_HIGH, (1,), generator=generator)[0])
        z_gen = torch.Generator()
        z_gen.manual_seed(seed)
        z = torch.randn(d, generator=z_gen, dtype=torch.float64).tolist()
        x_plus = [x[j] + tau * z[j] for j in range(d)]
        x_minus = [x[j] - tau * z[j] for j in range(d)]
        f_plus = float(f(torch.tensor(x_plus, dtype=torch.float64), t))
        f_minus = float(f(torch.tensor(x_minus, dtype=torch.float64), t))
        grad = (f_plus - f_minus) / (2 * tau)
        for j in range(d):
            x[j] = x[j] - gamma * (grad * z[j])
        xs.append(list(x))
    return xs
