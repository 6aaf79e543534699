"""Small pieces shared by the zero-order update rules (private).

* :func:`batch_shape` / :func:`check_batch_dims` -- the leading batch dimensions of a parameter.
* :func:`per_run` -- a hyperparameter (a Python number, or a tensor of shape
  ``batch_shape``) shaped so that it broadcasts against a tensor of shape
  ``(*batch_shape, *trailing)``.
* :func:`move` -- the parameter move ``x <- x - gamma * D`` (optionally with MeZO's
  decoupled weight decay) done in place, the one place every ``step`` kernel moves ``x``.
* :func:`draw_seed` -- one integer seed drawn from a ``torch.Generator`` (the MeZO
  seed trick: the kernels draw a seed per step and regenerate ``z`` from it; the
  literal references in :mod:`zotheory.reference` draw with this same call).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._checks import check_nonnegative, check_positive

# Seeds are drawn in [0, SEED_HIGH): non-negative int64 values accepted by
# ``torch.Generator.manual_seed``.
SEED_HIGH = 2**62


def check_batch_dims(x: torch.Tensor, batch_dims: int, *, min_event_dims: int = 1) -> None:
    """``batch_dims`` must be 0 or 1 and leave at least ``min_event_dims`` event dimensions."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(batch_dims, int) or isinstance(batch_dims, bool) or batch_dims not in (0, 1):
        raise ValueError(f"batch_dims must be 0 or 1, got {batch_dims!r}")
    if x.ndim - batch_dims < min_event_dims:
        raise ValueError(
            f"x must have at least {min_event_dims} event dimension(s) after {batch_dims} "
            f"batch dimension(s), got shape {tuple(x.shape)}"
        )


def batch_shape(x: torch.Tensor, batch_dims: int) -> tuple[int, ...]:
    return tuple(x.shape[:batch_dims])


def per_run(
    name: str,
    value: float | torch.Tensor,
    batch: Sequence[int],
    trailing_ndim: int,
    like: torch.Tensor,
) -> float | torch.Tensor:
    """Shape a hyperparameter for broadcasting against ``(*batch, <trailing_ndim dims>)``.

    Python numbers are returned as Python floats (so the arithmetic is the same
    IEEE double arithmetic a literal loop does); tensors must be 0-d or have shape
    ``batch`` and come back as ``like.dtype`` tensors of shape
    ``(*batch, 1, ..., 1)``.
    """
    if not isinstance(value, torch.Tensor):
        return float(value)
    batch = tuple(batch)
    if value.dtype != like.dtype or value.device != like.device:  # else ``to`` would return ``value``
        value = value.to(dtype=like.dtype, device=like.device)
    if value.ndim == 0:
        return value
    if tuple(value.shape) != batch:
        raise ValueError(
            f"{name} must be a number or a tensor of shape batch_shape={batch}, "
            f"got a tensor of shape {tuple(value.shape)}"
        )
    return value.reshape(batch + (1,) * trailing_ndim)


def decays(weight_decay: float | torch.Tensor) -> bool:
    """Whether a weight decay is switched on (a non-zero number, or any per-run tensor)."""
    return isinstance(weight_decay, torch.Tensor) or float(weight_decay) != 0.0


def move(
    x: torch.Tensor,
    gamma: float | torch.Tensor,
    direction: torch.Tensor,
    batch_dims: int,
    weight_decay: float | torch.Tensor = 0.0,
    *,
    reuse_direction: bool = False,
) -> None:
    """``x <- x - gamma * direction`` in place (gamma a number or a per-run tensor).

    With ``weight_decay = lambda != 0`` the move is MeZO's decoupled weight decay,
    ``x <- x - gamma * (direction + lambda * x)`` (the decay is applied to the iterate, not
    fed to the update rule), computed in ``direction``'s dtype. ``reuse_direction=True``
    says ``direction`` is a temporary the caller will not read again: ``gamma * D`` is then
    formed in its storage (the same bits, one tensor fewer; numbers only for ``gamma``).
    """
    if not decays(weight_decay) and reuse_direction and isinstance(gamma, (int, float)) \
            and not isinstance(gamma, bool):
        with torch.no_grad():
            x.sub_(direction.mul_(float(gamma)).to(x.dtype))
        return
    g = per_run("gamma", gamma, batch_shape(x, batch_dims), x.ndim - batch_dims, direction)
    with torch.no_grad():
        if not decays(weight_decay):
            step = g * direction
            x.sub_(step if step.dtype == x.dtype else step.to(x.dtype))
            return
        lam = per_run("weight_decay", weight_decay, batch_shape(x, batch_dims), x.ndim - batch_dims, direction)
        x.sub_((g * (direction + lam * x.to(direction.dtype))).to(x.dtype))


def draw_seed(generator: torch.Generator) -> int:
    """One seed for the MeZO seed trick, drawn from ``generator`` (one draw)."""
    return int(torch.randint(0, SEED_HIGH, (1,), generator=generator).item())


def require_generator(generator: torch.Generator | None, what: str) -> torch.Generator:
    if generator is None:
        raise ValueError(
            f"generator must be a torch.Generator when {what} is not given explicitly "
            f"(library code never draws from the global RNG)"
        )
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_finite_values(name: str, values: torch.Tensor) -> None:
    if not bool(torch.isfinite(values).all()):
        from ..estimators import NonFiniteOracleError

        raise NonFiniteOracleError(f"{name} is not finite: {values}")


class ParamSpec:
    """Shape, dtype and device of the parameter a state belongs to.

    Direction estimates regenerate ``z`` from a seed for a parameter of this exact
    shape and dtype (the MeZO seed trick), so states that consume
    :class:`~zotheory.estimates.DirectionEstimate` keep the spec, not a copy of ``x``.
    """

    __slots__ = ("shape", "dtype", "device")

    def __init__(self, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> None:
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.device = torch.device(device)

    @classmethod
    def of(cls, x: torch.Tensor) -> "ParamSpec":
        return cls(x.shape, x.dtype, x.device)

    def empty(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)

    def matches(self, x: torch.Tensor) -> bool:
        return x.shape == self.shape and x.dtype == self.dtype and x.device == self.device

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ParamSpec)
            and self.shape == other.shape
            and self.dtype == other.dtype
            and self.device == other.device
        )

    def __repr__(self) -> str:
        return f"ParamSpec(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


def dense_direction(estimate, param: ParamSpec) -> torch.Tensor:
    """``scale * z`` of a single-tensor :class:`DirectionEstimate`, shape ``param.shape``."""
    from ..estimates import DirectionEstimate

    if not isinstance(estimate, DirectionEstimate):
        raise ValueError(f"estimate must be a DirectionEstimate, got {type(estimate).__name__}")
    (d,) = estimate.dense(param.empty())
    if d.shape != param.shape:
        raise ValueError(
            f"estimate direction has shape {tuple(d.shape)}, the parameter {tuple(param.shape)}"
        )
    return d


def check_state_matches(x: torch.Tensor, param: ParamSpec, state_batch_dims: int, batch_dims: int) -> None:
    if batch_dims != state_batch_dims or not param.matches(x):
        raise ValueError(
            f"state does not match x: state is for {param} with batch_dims={state_batch_dims}, "
            f"x has shape {tuple(x.shape)}, dtype {x.dtype}, batch_dims={batch_dims}"
        )


def check_direction_step(
    x: torch.Tensor, state, gamma, tau, batch_dims: int, weight_decay=0.0
) -> None:
    """The checks every direction-estimate kernel's ``step`` starts with: ``x``'s batch
    dims, the state's parameter spec, ``gamma > 0``, (unless ``None``) ``tau > 0`` and
    ``weight_decay >= 0``."""
    check_batch_dims(x, batch_dims)
    check_state_matches(x, state.param, state.batch_dims, batch_dims)
    check_positive("gamma", gamma)
    if tau is not None:
        check_positive("tau", tau)
    check_nonnegative("weight_decay", weight_decay)


def direction_draw(
    generator: torch.Generator | None, seed: int | None, z: torch.Tensor | None
) -> int | None:
    """The seed a two-point step uses: the explicit one, none when ``z`` is explicit,
    else one drawn from ``generator``."""
    if z is not None and seed is not None:
        raise ValueError("give at most one of seed and z")
    if z is not None or seed is not None:
        return seed
    return draw_seed(require_generator(generator, "seed or z"))
