r"""Zero-order gradient estimators: the only code in the library that queries the oracle.

Every estimator takes the parameters (a tensor, or a list of tensors), a
zero-argument ``closure()`` that evaluates the oracle ``f^(x, xi)`` at the
*current* parameter values, and a finite-difference step ``tau``. It perturbs
the parameters **in place**, calls the closure, and writes the **saved original
values** back (never ``x + tau - tau``, which is not ``x`` in bf16/fp16), so that
afterwards the parameters are bitwise identical to before -- also when the
closure raises or returns a non-finite value (the parameters are restored first,
then :class:`NonFiniteOracleError` is raised naming the call). The only
exception is the opt-in ``restore="regenerate"`` of the direction estimators.

Notation: ``x`` is the concatenation of the flattened parameters (in list
order), ``d`` its length (the *event* numel), ``e_i`` the ``i``-th unit vector.

Coordinate estimators (return :class:`~zotheory.estimates.CoordinateEstimate`)
---------------------------------------------------------------------------

* :func:`jaguar_coordinates` (``mode="coordinate"``, Algorithm 1/2's estimate;
  ``k = 1`` is exactly the pseudocode). ``k`` distinct coordinates
  ``i_1..i_k`` (uniform, :func:`zotheory.random.sample_coordinates`), each with
  its own central difference, ``2k`` oracle calls::

      g_{i_j} = ( f^(x + tau e_{i_j}) - f^(x - tau e_{i_j}) ) / (2 tau).

  For an ``L``-smooth ``f`` and exact oracle, ``|g_i - partial_i f(x)| <= L tau / 2``
  (attained by ``(L/2) t|t|`` at 0); with oracle noise ``|delta| <= Delta`` the
  error is ``<= L tau / 2 + Delta / tau``. On quadratics the difference is exact.
  With ``i`` uniform, ``d * E_i[g_i e_i] = grad f`` on quadratics.

* :func:`full_coordinate_difference` (arXiv 2409.10442's "full difference"): every
  coordinate ``i = 0..d-1`` in order, each its own central difference, ``2d`` oracle calls::

      sum_i ( f^(x + tau e_i) - f^(x - tau e_i) ) / (2 tau) e_i;

  it *is* :func:`jaguar_coordinates` with ``indices = [0, 1, ..., d-1]`` (no draw), so the
  ``CoordinateEstimate``'s ``values`` hold the dense vector in flat event order.

* :func:`jaguar_block` (``mode="block"``, the authors' released code): a block
  ``S`` made of ``fraction`` of the rows times ``fraction`` of the columns of each
  2-D tensor (tensors of rank > 2 are viewed as ``(shape[0], rest)``),
  ``fraction`` of the entries of each 1-D tensor (at least one row / column /
  entry each: ``max(1, floor(fraction * n))``), moved jointly by ``+-tau``
  (``e_S`` = indicator of ``S``); one scalar, 2 oracle calls::

      g_S = ( f^(x + tau e_S) - f^(x - tau e_S) ) / (2 tau)   (~ sum_{i in S} partial_i f)

  written as the value of every entry of the block.

* :func:`jaguar_row` (``mode="row"``, seed 004's ZO-Jaguar): ``x`` has event
  shape ``(n, d)``; one row ``r`` (uniform) is moved by ``+-tau`` (``e_r`` = the
  row's indicator); the value ``(f^(x + tau e_r) - f^(x - tau e_r)) / (2 tau)`` is
  repeated over the row's ``d`` entries. 2 oracle calls.

Direction estimators (return :class:`~zotheory.estimates.DirectionEstimate`)
----------------------------------------------------------------------------

``z`` is regenerated from an integer ``seed`` (MeZO's seed trick,
:func:`zotheory.directions.generate_directions`; only the seed is stored) or
given explicitly as ``z=`` (stored in the estimate). The estimate is
``scale * z``:

* :func:`gaussian_two_point`: ``z ~ N(0, I)``,
  ``scale = (f^(x + tau z) - f^(x - tau z)) / (2 tau)``; ``E[scale z] = grad f``
  for linear ``f`` (and ``grad f_tau``, the Gaussian smoothing, in general).
* :func:`sphere_two_point`: ``z`` uniform on the unit sphere of the whole event
  space, ``scale = d (f^(x + tau z) - f^(x - tau z)) / (2 tau)`` (the factor ``d``
  makes ``E[scale z] ~ grad f`` since ``E[z z^T] = I/d``).
* :func:`l2_smoothing`: arXiv 2409.10442's "l2 smoothing" baseline, one direction uniform
  on the unit sphere, ``d (f^(x + tau e) - f^(x - tau e)) / (2 tau) e``: it *is*
  :func:`sphere_two_point` (a named entry point, no other code).
* :func:`rademacher_two_point`: ``z in {-1, +1}^d``, same scale as Gaussian.
* :func:`forward_difference`: ``scale = c (f^(x + tau z) - f0) / tau`` with
  ``f0 = f^(x)`` (one more call unless ``f0`` is supplied) and ``c = d`` for the
  sphere, 1 otherwise.
* :func:`forward_grad` (Forward-Grad, Baydin et al. 2022): ``scale = <grad fn(x), z>``
  computed exactly by one forward-mode jvp (``torch.func.jvp``) of a functional
  ``fn``; needs a differentiable ``fn``, not the oracle closure.

``restore``: ``"saved"`` (default) keeps a copy of the parameters, perturbs
``x <- fl(x_saved + tau z)`` / ``fl(x_saved - tau z)`` and writes the copy back:
bitwise, at the cost of one copy of the parameters. ``"regenerate"`` is MeZO's
in-place walk ``x += tau z; x -= 2 tau z; x += tau z`` (``z`` regenerated each
time, no copy): it needs no extra memory but does **not** restore the parameters
bitwise: each of the three moves rounds to the parameter dtype, so ``x`` may
drift by a few units in its last place per estimate (large in bf16/fp16, small
but non-zero in fp32/fp64), and the realised perturbations differ from
``+-tau z`` by the same rounding.

With ``seed=`` the regenerated ``z`` is a temporary, so both restore modes form
``tau z`` in its storage and write the moved value straight into the parameter
(no other temporary); unbatched Gaussian directions over contiguous parameters are
regenerated in pieces (:func:`zotheory.directions.iter_direction_chunks`), so the
float32 working memory of a move is one piece of ``2^20`` entries, not the largest
tensor. The same elementwise operations on the same values: bitwise the per-tensor
computation (``tests/test_bench_llm.py``).

Other
-----

* :func:`evaluate_at`: ``f^(x + D_j)`` for candidate displacements ``D_j``
  (ZO-SGD-Cons), parameters restored bitwise after each.
* :func:`current_perturbation`: inside an oracle call made by an estimator, which tensors
  (and, for the coordinate estimators, which entries) are moved at that call, and the
  estimator call it belongs to (:class:`Perturbation`); ``None`` outside. A hint the
  oracle may use to skip work that depends only on unmoved parameters (the LLM closures
  share the forward pass below the lowest perturbed block: ``zotheory.llm.prefix``); it
  costs one context-variable set per oracle call when nobody reads it.

Conventions
-----------

* ``batch_dims`` (0 or more, lists need 0): a single tensor ``x`` of shape
  ``(*batch, *event)`` holds ``prod(batch)`` independent runs perturbed at once;
  ``closure()`` returns shape ``batch``; ``indices`` have shape ``(*batch, k)``;
  ``tau`` is a number or a tensor of shape ``batch`` (one value per run).
* The perturbed value is computed in ``promote_types(param.dtype, float32)`` and
  cast to the parameter dtype. Differences are computed in the promotion of that
  dtype and the closure's value dtype; the divisor is ``2 tau`` (``tau`` for the
  forward difference) exactly as the pseudocode writes it, even though in low
  precision the realised step ``fl(x + tau) - x`` may differ from ``tau``.
* The writes happen under ``torch.no_grad()``; the closure runs in the caller's
  grad mode (wrap the call in ``torch.no_grad()`` to save memory).
* ``oracle_calls`` counts closure evaluations per run.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Iterable, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_choice, check_in_range, check_int_at_least, check_positive, check_tensor_rank
from .directions import iter_direction_chunks, iter_directions
from .estimates import DIRECTION_DISTRIBUTIONS, CoordinateEstimate, DirectionEstimate, group_by_tensor
from .random import sample_coordinates

__all__ = [
    "NonFiniteOracleError",
    "RESTORE_MODES",
    "jaguar_coordinates",
    "jaguar_block",
    "jaguar_row",
    "full_coordinate_difference",
    "gaussian_two_point",
    "l2_smoothing",
    "sphere_two_point",
    "rademacher_two_point",
    "forward_difference",
    "forward_grad",
    "evaluate_at",
    "Perturbation",
    "current_perturbation",
]

Params = Union[Tensor, Sequence[Tensor]]
Closure = Callable[[], Union[Tensor, float]]

RESTORE_MODES = ("saved", "regenerate")


class NonFiniteOracleError(FloatingPointError):
    """The oracle returned nan or inf; the parameters were restored before raising."""


@dataclass(frozen=True, eq=False)
class Perturbation:
    """What an estimator has moved while it calls the oracle (see :func:`current_perturbation`).

    ``session``: one object per estimator call. Every oracle call carrying the same session
    sees every parameter *not* named in ``tensors`` at the same value (estimators restore
    bitwise between calls), so an oracle may reuse, within one session, work that depends
    only on unmoved parameters -- never across sessions (the update moves the weights
    between estimator calls). ``tensors``: the moved tensors as the estimator was given them
    (the kernels pass detached views of the parameters: identify them by storage,
    ``data_ptr()`` and ``numel()``, not by identity). ``indices[i]``: the flat indices moved
    in ``tensors[i]`` (a 1-D CPU long tensor), or ``None`` when any entry may have moved.
    ``tensors == ()``: the call is at the unperturbed point (``forward_difference``'s ``f(x)``).
    """

    session: object
    tensors: tuple[Tensor, ...]
    indices: tuple[Tensor | None, ...]


_PERTURBATION: ContextVar[Perturbation | None] = ContextVar("zotheory_perturbation", default=None)


def current_perturbation() -> Perturbation | None:
    """Inside an oracle call made by an estimator: the :class:`Perturbation` of that call.

    ``None`` outside the estimators' oracle calls (e.g. evaluation, first-order losses, the
    jvp of Forward-Grad). Every estimator of this module sets it around each ``closure()``
    call; reading it is optional (an oracle that ignores it computes the same values).
    """
    return _PERTURBATION.get()


def _whole(session: object, tensors: Sequence[Tensor]) -> Perturbation:
    """Every entry of ``tensors`` may move (direction estimators, batched runs)."""
    return Perturbation(session, tuple(tensors), (None,) * len(tensors))


# --------------------------------------------------------------------------- helpers


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _as_list(params: Params | Iterable[Tensor], batch_dims: int, name: str = "params") -> tuple[list[Tensor], bool, int]:
    """(tensors, given_as_list, batch_dims) after validation."""
    batch_dims = check_int_at_least("batch_dims", batch_dims, 0)
    if isinstance(params, Tensor):
        tensors, is_list = [params], False
    else:
        try:
            tensors = list(params)
        except TypeError:
            raise ValueError(
                f"{name} must be a tensor or a sequence of tensors, got {type(params).__name__}"
            ) from None
        is_list = True
        if not tensors:
            raise ValueError(f"{name} must hold at least one tensor, got an empty sequence")
        if batch_dims != 0:
            raise ValueError(
                f"batch_dims must be 0 when {name} is a list of tensors, got {batch_dims}"
            )
    for p in tensors:
        if not isinstance(p, Tensor):
            raise ValueError(f"{name} must hold torch.Tensors, got {type(p).__name__}")
        if not p.is_floating_point():
            raise ValueError(f"{name} must be floating-point tensors, got dtype {p.dtype}")
    if tensors[0].ndim < batch_dims:
        raise ValueError(
            f"batch_dims must be <= {name}.ndim = {tensors[0].ndim}, got {batch_dims}"
        )
    return tensors, is_list, batch_dims


def _event_numel(p: Tensor, batch_dims: int) -> int:
    return math.prod(p.shape[batch_dims:])


def _tau_tensor(tau: float | Tensor, batch_shape: tuple[int, ...], device: torch.device) -> Tensor:
    """``tau`` as a float64 tensor of shape ``batch_shape`` (validated > 0 and finite)."""
    check_positive("tau", tau)
    t = tau.detach() if isinstance(tau, Tensor) else torch.tensor(float(tau), dtype=torch.float64)
    if t.device != device:
        t = t.to(device=device)
    t = _cast(t, torch.float64)
    if t.numel() == 1:
        return t.reshape(()).expand(batch_shape)
    if tuple(t.shape) != batch_shape:
        raise ValueError(
            f"tau must be a number or a tensor of shape {batch_shape} (one value per run), "
            f"got shape {tuple(t.shape)}"
        )
    return t


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` without the call when ``t`` already has it (``to`` returns ``t`` itself
    then too): the same tensor, a dispatch fewer on the estimators' per-call path."""
    return t if t.dtype == dtype else t.to(dtype)


def _bcast(t: Tensor, ndim: int) -> Tensor:
    """Append singleton dims so ``t`` (shape ``batch``) broadcasts over ``ndim`` total dims."""
    return t.reshape(tuple(t.shape) + (1,) * (ndim - t.ndim))


def _query(closure: Closure, call: str, batch_shape: tuple[int, ...], moved: Perturbation | None = None) -> Tensor:
    """One oracle evaluation, validated: shape ``batch_shape`` and finite. ``moved`` is what
    :func:`current_perturbation` returns during the call."""
    if moved is None:
        value = closure()
    else:
        token = _PERTURBATION.set(moved)
        try:
            value = closure()
        finally:
            _PERTURBATION.reset(token)
    if isinstance(value, Tensor):
        v = value.detach().clone()
    else:  # Python numbers are doubles: keep them in float64 (not the default float32)
        if isinstance(value, Real) and not isinstance(value, bool):
            v = torch.tensor(float(value), dtype=torch.float64)
        else:
            v = torch.as_tensor(value)
    if v.is_complex() or v.dtype == torch.bool:
        raise ValueError(f"closure must return a real number or tensor, got dtype {v.dtype}")
    if batch_shape == ():
        if v.numel() != 1:
            raise ValueError(
                f"closure must return one value (batch_dims=0), got shape {tuple(v.shape)} from {call}"
            )
        v = v.reshape(())
    elif tuple(v.shape) != batch_shape:
        raise ValueError(
            f"closure must return a tensor of shape {batch_shape} (one value per run), "
            f"got shape {tuple(v.shape)} from {call}"
        )
    # Fast check: a sum is finite only if every term is (nan/inf propagate); a non-finite
    # sum of finite terms (overflow) falls through to the exact elementwise check.
    if v.numel() and math.isfinite(float(v.sum())):
        return v
    finite = torch.isfinite(v)
    if not bool(finite.all()):
        bad = v[~finite].reshape(-1)[0].item()
        where = ""
        if batch_shape != ():
            first = torch.nonzero(~finite)[0].tolist()
            where = f" (run {tuple(first) if len(first) > 1 else first[0]})"
        raise NonFiniteOracleError(f"{call} returned {bad}{where}; parameters were restored")
    return v


def _value_dtype(params: Sequence[Tensor], *values: Tensor) -> torch.dtype:
    dtype = torch.float32
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    for v in values:
        dtype = torch.promote_types(dtype, v.dtype)
    return dtype


def _target(p: Tensor, batch_dims: int) -> Tensor:
    """A view of ``p`` with at least one event dimension (0-d events get a unit axis)."""
    return p if p.ndim > batch_dims else p.unsqueeze(-1)


def _locate(p: Tensor, flat: Tensor, batch_dims: int) -> tuple[Tensor, Tensor | tuple[Tensor, ...]]:
    """(view, where) addressing the entries ``flat`` (shape ``(*batch, n)``) of ``p``.

    For a contiguous ``p``, ``where`` is ``flat`` itself, to be used with ``gather`` /
    ``scatter_`` along the last dimension of a flat view of the event dimensions (it shares
    storage with ``p``, so writes go through). Otherwise ``where`` is an index tuple for
    advanced indexing (which also writes through to a non-contiguous ``p``). Both address
    exactly the same entries; :func:`_read` / :func:`_write` dispatch on the form.
    """
    t = _target(p, batch_dims)
    if t.is_contiguous():
        # Fast path: gather/scatter on the flat view (no per-call batch aranges, no
        # advanced-indexing machinery).
        return t.view(tuple(t.shape[:batch_dims]) + (-1,)), flat
    batch_idx = tuple(
        torch.arange(n, device=flat.device).reshape((1,) * a + (n,) + (1,) * (flat.ndim - a - 1))
        for a, n in enumerate(t.shape[:batch_dims])
    )
    event_idx = torch.unravel_index(flat, tuple(t.shape[batch_dims:]))
    return t, batch_idx + tuple(event_idx)


def _read(t: Tensor, where: Tensor | tuple[Tensor, ...]) -> Tensor:
    """A copy of the addressed entries (shape of the index)."""
    if isinstance(where, Tensor):
        return t.gather(-1, where)
    return t[where].clone()


def _write(t: Tensor, where: Tensor | tuple[Tensor, ...], values: Tensor) -> None:
    """Write ``values`` (shape of the index) into the addressed entries, in place."""
    if isinstance(where, Tensor):
        if t.device.type != "cpu" or t.dtype in (torch.float32, torch.float64):
            t.scatter_(-1, where, values)
        else:
            # On the CPU, scatter_ into a bfloat16 / float16 tensor costs O(t.numel()) (PyTorch
            # 2.x: ~65 ms for 13M entries, measured by zotheory.benchmarks); index_put_ writes
            # the same entries in O(index).
            batch = tuple(
                torch.arange(n, device=where.device).reshape((1,) * a + (n,) + (1,) * (where.ndim - a - 1))
                for a, n in enumerate(where.shape[:-1])
            )
            t.index_put_(batch + (where,), values)
    else:
        t[where] = values


class _Entries:
    """Selected entries of parameter tensors, perturbed jointly and restored from a saved copy."""

    def __init__(self, parts: list[tuple[Tensor, Tensor | tuple[Tensor, ...]]]):
        self.parts = parts
        with torch.no_grad():
            self.saved = [_read(t, loc) for t, loc in parts]

    def shift(self, tau: Tensor, sign: int) -> None:
        """Set every selected entry to ``fl(saved +- tau)`` (tau shape ``batch``)."""
        with torch.no_grad():
            for (t, loc), s in zip(self.parts, self.saved):
                cdt = _compute_dtype(t.dtype)
                step = _bcast(_cast(tau, cdt), s.ndim)
                base = _cast(s, cdt)
                moved = base + step if sign > 0 else base - step
                _write(t, loc, _cast(moved, t.dtype))

    def restore(self) -> None:
        with torch.no_grad():
            for (t, loc), s in zip(self.parts, self.saved):
                _write(t, loc, s)


def _central(
    entries: _Entries,
    closure: Closure,
    tau: Tensor,
    batch_shape: tuple[int, ...],
    params: Sequence[Tensor],
    plus: str,
    minus: str,
    moved: Perturbation,
) -> Tensor:
    """``(f(x + tau e) - f(x - tau e)) / (2 tau)`` for the joint perturbation ``entries``."""
    try:
        entries.shift(tau, +1)
        f_plus = _query(closure, plus, batch_shape, moved)
        entries.shift(tau, -1)
        f_minus = _query(closure, minus, batch_shape, moved)
    finally:
        entries.restore()
    dtype = _value_dtype(params, f_plus, f_minus)
    return (_cast(f_plus, dtype) - _cast(f_minus, dtype)) / (2 * _cast(tau, dtype))


def _check_indices(
    name: str, indices: Tensor, batch_shape: tuple[int, ...], numel: int, device: torch.device
) -> Tensor:
    if not isinstance(indices, Tensor):
        indices = torch.as_tensor(indices)
    if indices.dtype.is_floating_point or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {indices.dtype}")
    if indices.ndim != len(batch_shape) + 1 or tuple(indices.shape[:-1]) != batch_shape or indices.shape[-1] < 1:
        raise ValueError(
            f"{name} must have shape (*{batch_shape}, k) with k >= 1, got {tuple(indices.shape)}"
        )
    if bool((indices < 0).any()) or bool((indices >= numel).any()):
        raise ValueError(
            f"{name} must lie in [0, {numel}) (the event numel), got values in "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )
    return indices.to(device=device, dtype=torch.long)


def _offsets(numels: Sequence[int]) -> list[int]:
    out = [0]
    for n in numels:
        out.append(out[-1] + n)
    return out


def _split_global(
    tensors: list[Tensor], flat: Tensor, session: object
) -> tuple[list[tuple[Tensor, tuple[Tensor, ...]]], Perturbation]:
    """Route global flat indices (unbatched) of a tensor list to per-tensor locations.

    One host transfer of the indices; work proportional to the tensors actually hit. Returns
    ``(parts, Perturbation)``: the locations, and the hint naming the tensors hit and their
    local indices for the estimator call ``session``.
    """
    numels = [p.numel() for p in tensors]
    offsets = _offsets(numels)
    flat_cpu = flat.reshape(-1).cpu()
    parts, hit, where = [], [], []
    for t, pos in group_by_tensor(flat_cpu, numels):
        local = flat_cpu[pos] - offsets[t]
        parts.append(_locate(tensors[t], local.to(tensors[t].device), 0))
        hit.append(tensors[t])
        where.append(local)
    return parts, Perturbation(session, tuple(hit), tuple(where))


def _require_generator(generator: torch.Generator | None, what: str, fn: str) -> torch.Generator:
    if generator is None:
        raise ValueError(f"{fn} needs generator= (to draw {what}) or {what}= given explicitly")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


# --------------------------------------------------------------------------- coordinates


def jaguar_coordinates(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    k: int = 1,
    generator: torch.Generator | None = None,
    indices: Tensor | None = None,
    batch_dims: int = 0,
) -> CoordinateEstimate:
    """JAGUAR's coordinate estimate: ``k`` coordinates, each its own central difference.

    ``g_i = (f^(x + tau e_i) - f^(x - tau e_i)) / (2 tau)`` for ``k`` distinct
    coordinates per run drawn by :func:`~zotheory.random.sample_coordinates`
    from ``generator`` (``k = 1`` is Algorithm 1), or the given ``indices`` (shape
    ``(*batch, k)``, flat event indices; no draw, ``generator`` untouched;
    duplicates are allowed and estimated separately). Coordinates are
    processed in order ``j = 0..k-1``; ``2k`` oracle calls. Returns
    ``CoordinateEstimate(indices, values, mode="coordinate", oracle_calls=2k)``.
    """
    tensors, is_list, batch_dims = _as_list(params, batch_dims)
    x0 = tensors[0]
    batch_shape = tuple(x0.shape[:batch_dims])
    numel = sum(_event_numel(p, batch_dims) for p in tensors)
    tau_t = _tau_tensor(tau, batch_shape, x0.device)
    k_given = check_int_at_least("k", k, 1)
    if indices is None:
        gen = _require_generator(generator, "indices", "jaguar_coordinates")
        if k_given > numel:
            raise ValueError(f"k must be in [1, {numel}] (the event numel), got {k_given}")
        indices = sample_coordinates(numel, k_given, gen, batch_shape, device=gen.device).to(x0.device)
    else:
        indices = _check_indices("indices", indices, batch_shape, numel, x0.device)
        if k_given != 1 and k_given != indices.shape[-1]:
            raise ValueError(
                f"k must match indices.shape[-1] = {indices.shape[-1]} when indices are given, got {k_given}"
            )
    n_coords = int(indices.shape[-1])

    values = []
    session = object()
    for j in range(n_coords):
        flat = indices[..., j : j + 1]
        if is_list:
            parts, moved = _split_global(tensors, flat, session)
        else:
            parts = [_locate(x0, flat, batch_dims)]
            moved = _whole(session, tensors)
        g = _central(
            _Entries(parts), closure, tau_t, batch_shape, tensors,
            f"f(x + tau*e_i) [coordinate {j}]", f"f(x - tau*e_i) [coordinate {j}]", moved,
        )
        values.append(g)
    dtype = _value_dtype(tensors, *values)
    # One coordinate (Algorithm 1/2): a fresh (*batch, 1) tensor without stack's copy.
    stacked = _cast(values[0], dtype).unsqueeze(-1) if n_coords == 1 else torch.stack(
        [v.to(dtype) for v in values], dim=-1)
    return CoordinateEstimate(
        indices=indices,
        values=stacked,
        mode="coordinate",
        oracle_calls=2 * n_coords,
    )


def full_coordinate_difference(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    batch_dims: int = 0,
) -> CoordinateEstimate:
    """The full coordinate difference ``sum_i (f^(x + tau e_i) - f^(x - tau e_i)) / (2 tau) e_i``.

    All ``d`` event coordinates in order ``i = 0..d-1`` (``2d`` oracle calls): exactly
    :func:`jaguar_coordinates` with ``indices = arange(d)`` for every run, so ``values``
    (shape ``(*batch, d)``) is the dense estimate in flat event order.
    """
    tensors, _, batch_dims = _as_list(params, batch_dims)
    batch_shape = tuple(tensors[0].shape[:batch_dims])
    d = sum(_event_numel(p, batch_dims) for p in tensors)
    every = torch.arange(d, device=tensors[0].device).expand(*batch_shape, d).contiguous()
    return jaguar_coordinates(params, closure, tau, indices=every, batch_dims=batch_dims)


def _block_count(n: int, fraction: float) -> int:
    # floor(fraction * n), at least 1; the 1e-9 guards 0.7 * 10 = 6.9999... style rounding.
    return max(1, min(n, int(math.floor(fraction * n + 1e-9))))


def jaguar_block(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    fraction: float = 0.1,
    generator: torch.Generator | None = None,
    indices: Tensor | None = None,
) -> CoordinateEstimate:
    """The authors' block estimate: one joint perturbation of a random block, one scalar.

    For each tensor in list order (drawing from ``generator``): a 2-D tensor (or
    a tensor of rank > 2 viewed as ``(shape[0], rest)``) contributes the entries
    at ``max(1, floor(fraction * rows))`` distinct rows times
    ``max(1, floor(fraction * cols))`` distinct columns (rows drawn first, then
    columns); a 1-D tensor ``max(1, floor(fraction * n))`` distinct entries; a
    0-d tensor its one entry. All selected entries are moved by the same
    ``+-tau`` at once and ``g = (f^(x + tau e_S) - f^(x - tau e_S)) / (2 tau)`` is
    the value of every selected entry. ``indices`` (1-D, global flat indices over
    the concatenation of the tensors) skips the draw. Unbatched only. Returns
    ``CoordinateEstimate(indices (sorted ascending), values, mode="block", oracle_calls=2)``.
    """
    tensors, _, _ = _as_list(params, 0)
    check_in_range("fraction", fraction, 0.0, 1.0, low_closed=False, high_closed=True)
    fraction = float(fraction)
    x0 = tensors[0]
    tau_t = _tau_tensor(tau, (), x0.device)
    numel = sum(p.numel() for p in tensors)
    if indices is None:
        gen = _require_generator(generator, "indices", "jaguar_block")
        chunks = []
        offset = 0
        for p in tensors:
            if p.ndim == 0:
                local = torch.zeros(1, dtype=torch.long)
            elif p.ndim == 1:
                n = p.shape[0]
                local = sample_coordinates(n, _block_count(n, fraction), gen, device=gen.device)
            else:
                n_rows = p.shape[0]
                n_cols = p.numel() // n_rows
                rows = sample_coordinates(n_rows, _block_count(n_rows, fraction), gen, device=gen.device)
                cols = sample_coordinates(n_cols, _block_count(n_cols, fraction), gen, device=gen.device)
                rows, cols = rows.sort().values, cols.sort().values
                local = (rows[:, None] * n_cols + cols[None, :]).reshape(-1)
            chunks.append(local.sort().values.to(x0.device) + offset)
            offset += p.numel()
        indices = torch.cat(chunks)
    else:
        indices = _check_indices("indices", indices, (), numel, x0.device)
    parts, moved = _split_global(tensors, indices, object())
    g = _central(_Entries(parts), closure, tau_t, (), tensors, "f(x + tau*e_S)", "f(x - tau*e_S)", moved)
    return CoordinateEstimate(
        indices=indices,
        values=g.expand(indices.shape).clone(),
        mode="block",
        oracle_calls=2,
    )


def _row_shapes(tensors: Sequence[Tensor]) -> list[tuple[int, int]]:
    """(rows, row length) of each tensor of a list: ``(shape[0], rest)`` for rank >= 2, one row otherwise."""
    return [(int(p.shape[0]), p.numel() // int(p.shape[0])) if p.ndim >= 2 and p.shape[0] > 0
            else (1, p.numel()) for p in tensors]


def _jaguar_row_list(
    tensors: list[Tensor], closure: Closure, tau: float | Tensor, generator: torch.Generator | None, row: int | None
) -> CoordinateEstimate:
    """:func:`jaguar_row` over a list of tensors: one row among all the rows of all the tensors."""
    shapes = _row_shapes(tensors)
    total = sum(r for r, _ in shapes)
    tau_t = _tau_tensor(tau, (), tensors[0].device)
    if row is None:
        gen = _require_generator(generator, "row", "jaguar_row")
        r = int(sample_coordinates(total, 1, gen, device=gen.device)[0])
    else:
        if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < total:
            raise ValueError(f"row must be an integer in [0, {total}) (rows of all the tensors), got {row!r}")
        r = row
    offset = 0
    for (rows, length), p in zip(shapes, tensors):
        if r < rows:
            break
        r -= rows
        offset += p.numel()
    flat = offset + r * length + torch.arange(length)
    parts, moved = _split_global(tensors, flat, object())
    g = _central(_Entries(parts), closure, tau_t, (), tensors, "f(x + tau*e_row)", "f(x - tau*e_row)", moved)
    return CoordinateEstimate(indices=flat.to(tensors[0].device), values=g.expand(flat.shape).clone(),
                              mode="row", oracle_calls=2)


def jaguar_row(
    x: Tensor | Sequence[Tensor],
    closure: Closure,
    tau: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    row: int | Tensor | None = None,
    batch_dims: int = 0,
) -> CoordinateEstimate:
    """Seed 004's ZO-Jaguar estimate: one whole row of a matrix moved by ``+-tau``.

    ``x`` has event shape ``(n, d)``. The row ``r`` is drawn uniformly per run
    (``sample_coordinates(n, 1, generator, batch_shape)``) or given as ``row``
    (an int, or a LongTensor of shape ``batch``). ``g = (f^(x + tau e_r) -
    f^(x - tau e_r)) / (2 tau)`` with ``e_r`` the row's indicator. Returns
    ``CoordinateEstimate(indices = r*d + arange(d), values = g repeated,
    mode="row", oracle_calls=2)``, both of shape ``(*batch, d)``.

    A list of tensors (unbatched): the rows of all the tensors in list order (a tensor of
    rank >= 2 has ``shape[0]`` rows of ``numel / shape[0]`` entries, a vector or a scalar
    is one row), one drawn uniformly (``row`` = its index among all rows); ``indices`` are
    global flat indices over the concatenation, 1-D.
    """
    if not isinstance(x, Tensor):
        tensors, _, _ = _as_list(x, batch_dims, name="x")
        if row is not None and isinstance(row, Tensor):
            row = int(row)
        return _jaguar_row_list(tensors, closure, tau, generator, row)
    tensors, _, batch_dims = _as_list(x, batch_dims, name="x")
    check_tensor_rank("x", x, 2, batch_dims=batch_dims)
    batch_shape = tuple(x.shape[:batch_dims])
    n, d = int(x.shape[-2]), int(x.shape[-1])
    tau_t = _tau_tensor(tau, batch_shape, x.device)
    if row is None:
        gen = _require_generator(generator, "row", "jaguar_row")
        rows = sample_coordinates(n, 1, gen, batch_shape, device=gen.device).to(x.device)
    else:
        r = row if isinstance(row, Tensor) else torch.as_tensor(row)
        if r.dtype.is_floating_point or r.dtype == torch.bool or r.is_complex():
            raise ValueError(f"row must be an integer or an integer tensor, got {row!r}")
        if tuple(r.shape) != batch_shape and not (r.numel() == 1 and batch_shape == ()):
            raise ValueError(f"row must have shape {batch_shape} (one row per run), got {tuple(r.shape)}")
        if bool((r < 0).any()) or bool((r >= n).any()):
            raise ValueError(f"row must be in [0, {n}), got {row!r}")
        rows = r.reshape(batch_shape + (1,)).to(device=x.device, dtype=torch.long)
    flat = rows * d + torch.arange(d, device=x.device)
    entries = _Entries([_locate(x, flat, batch_dims)])
    g = _central(entries, closure, tau_t, batch_shape, tensors, "f(x + tau*e_row)", "f(x - tau*e_row)",
                 _whole(object(), tensors))
    return CoordinateEstimate(
        indices=flat,
        values=_bcast(g, g.ndim + 1).expand(flat.shape).clone(),
        mode="row",
        oracle_calls=2,
    )


# --------------------------------------------------------------------------- directions


def _explicit_z(
    z: Tensor | Sequence[Tensor], tensors: list[Tensor], is_list: bool
) -> tuple[list[Tensor], Tensor | tuple[Tensor, ...]]:
    """Validate an explicit direction; returns (tensors in compute dtype, value to store)."""
    if isinstance(z, Tensor):
        if is_list:
            raise ValueError("z must be a sequence of tensors (one per parameter) when params is a list")
        zs = [z]
        stored: Tensor | tuple[Tensor, ...] = z
    else:
        zs = list(z)
        stored = tuple(zs)
        if not is_list and len(zs) == 1:
            stored = zs[0]
    if len(zs) != len(tensors):
        raise ValueError(f"z must hold {len(tensors)} tensor(s) (one per parameter), got {len(zs)}")
    out = []
    for zi, p in zip(zs, tensors):
        if not isinstance(zi, Tensor) or tuple(zi.shape) != tuple(p.shape):
            got = tuple(zi.shape) if isinstance(zi, Tensor) else type(zi).__name__
            raise ValueError(f"z must match the parameter shapes: expected {tuple(p.shape)}, got {got}")
        out.append(zi.detach().to(device=p.device, dtype=_compute_dtype(p.dtype)))
    return out, stored


def _direction_source(
    tensors: list[Tensor],
    is_list: bool,
    seed: int | None,
    z: Tensor | Sequence[Tensor] | None,
    distribution: str,
    batch_dims: int,
) -> tuple[Callable[[], Iterable[Tensor]], int | None, Tensor | tuple[Tensor, ...] | None]:
    """(a callable yielding z tensor by tensor, seed to store, z to store)."""
    if (seed is None) == (z is None):
        raise ValueError("exactly one of seed= (regenerate z, MeZO's trick) or z= (explicit) must be given")
    if z is not None:
        zs, stored = _explicit_z(z, tensors, is_list)
        return (lambda: zs), None, stored
    seed = check_int_at_least("seed", seed, 0)
    return (lambda: iter_directions(tensors, seed, distribution, batch_dims=batch_dims)), seed, None


def _move_from_saved(
    tensors: list[Tensor], saved: list[Tensor], zs: Iterable[Tensor], tau: Tensor, sign: float, fresh: bool = False
) -> None:
    """``p <- fl(saved + sign * tau * z)`` computed in the compute dtype.

    ``fresh=True`` says every ``z`` is a temporary owned by this call (regenerated from a
    seed): ``tau * z`` is then formed in ``z``'s own storage and, when the parameter is in
    the compute dtype, the sum is written straight into ``p``. The same elementwise
    operations in the same order (so the same bits), without the temporaries and the copy.
    """
    with torch.no_grad():
        for p, s, zi in zip(tensors, saved, zs):
            cdt = _compute_dtype(p.dtype)
            tau_c = _bcast(tau.to(cdt), p.ndim)
            if fresh and zi.dtype == cdt:
                step = zi.mul_(tau_c)
            else:
                step = tau_c * zi.to(cdt)
            if fresh and p.dtype == cdt and s.dtype == cdt:
                (torch.add if sign > 0 else torch.sub)(s, step, out=p)
            else:
                p.copy_((s.to(cdt) + step if sign > 0 else s.to(cdt) - step).to(p.dtype))


def _move_inplace(tensors: list[Tensor], zs: Iterable[Tensor], tau: Tensor, coef: float, fresh: bool = False) -> None:
    """``p <- fl(p + coef * tau * z)`` (MeZO's regenerate walk; not bitwise reversible).

    ``fresh=True``: ``z`` is a temporary owned by this call (see :func:`_move_from_saved`);
    ``coef * (tau * z)`` is formed in place and added to ``p`` in place (same bits).
    """
    with torch.no_grad():
        for p, zi in zip(tensors, zs):
            cdt = _compute_dtype(p.dtype)
            tau_c = _bcast(tau.to(cdt), p.ndim)
            if fresh and zi.dtype == cdt:
                step = zi.mul_(tau_c).mul_(coef)
                if p.dtype == cdt:
                    p.add_(step)
                else:
                    p.copy_((p.to(cdt) + step).to(p.dtype))
                continue
            step = tau_c * zi.to(cdt)
            p.copy_((p.to(cdt) + coef * step).to(p.dtype))


def _move_from_saved_pieces(tensors: list[Tensor], saved: list[Tensor], pieces, tau: Tensor, sign: float) -> None:
    """:func:`_move_from_saved` (``fresh=True``, unbatched) over the flat pieces of
    :func:`zotheory.directions.iter_direction_chunks`: the same elementwise operations on the
    same values, piece by piece, so the temporaries are one piece (not one tensor) of float32."""
    with torch.no_grad():
        for i, lo, hi, zc in pieces:
            p, s = tensors[i], saved[i]
            cdt = _compute_dtype(p.dtype)
            step = zc.mul_(tau.to(cdt))
            pf, sf = p.view(-1)[lo:hi], s.view(-1)[lo:hi]
            if p.dtype == cdt and s.dtype == cdt:
                (torch.add if sign > 0 else torch.sub)(sf, step, out=pf)
            else:
                # = pf.copy_((sf.to(cdt) +- step).to(p.dtype)) bit for bit (the add promotes sf to
                # cdt exactly; copy_ rounds to p.dtype as .to does), in two passes and no new tensor
                (torch.add if sign > 0 else torch.sub)(sf, step, out=step)
                pf.copy_(step)


def _move_inplace_pieces(tensors: list[Tensor], pieces, tau: Tensor, coef: float) -> None:
    """:func:`_move_inplace` (``fresh=True``, unbatched) piece by piece (see above)."""
    with torch.no_grad():
        for i, lo, hi, zc in pieces:
            p = tensors[i]
            cdt = _compute_dtype(p.dtype)
            step = zc.mul_(tau.to(cdt)).mul_(coef)
            pf = p.view(-1)[lo:hi]
            if p.dtype == cdt:
                pf.add_(step)
            else:  # = pf.copy_((pf.to(cdt) + step).to(p.dtype)) bit for bit (see above)
                torch.add(pf, step, out=step)
                pf.copy_(step)


def _piece_source(tensors: list[Tensor], seed: int | None, distribution: str, batch_dims: int):
    """A callable giving the direction in pieces, or None where the per-tensor path is used
    (explicit ``z``, batched runs, the sphere, non-contiguous parameters)."""
    if seed is None or batch_dims != 0 or distribution == "sphere" or not all(p.is_contiguous() for p in tensors):
        return None
    return lambda: iter_direction_chunks(tensors, seed, distribution)


def _saved_move(tensors, saved, directions, pieces, tau, sign, fresh) -> None:
    if pieces is not None:
        _move_from_saved_pieces(tensors, saved, pieces(), tau, sign)
    else:
        _move_from_saved(tensors, saved, directions(), tau, sign, fresh)


def _walk_move(tensors, directions, pieces, tau, coef, fresh) -> None:
    if pieces is not None:
        _move_inplace_pieces(tensors, pieces(), tau, coef)
    else:
        _move_inplace(tensors, directions(), tau, coef, fresh)


def _check_distribution(distribution: str) -> str:
    return check_choice("distribution", distribution, DIRECTION_DISTRIBUTIONS)


def _event_dim(tensors: list[Tensor], batch_dims: int) -> int:
    return sum(_event_numel(p, batch_dims) for p in tensors)


def _direction_two_point(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    distribution: str,
    seed: int | None,
    z: Tensor | Sequence[Tensor] | None,
    batch_dims: int,
    restore: str,
) -> DirectionEstimate:
    tensors, is_list, batch_dims = _as_list(params, batch_dims)
    _check_distribution(distribution)
    check_choice("restore", restore, RESTORE_MODES)
    batch_shape = tuple(tensors[0].shape[:batch_dims])
    tau_t = _tau_tensor(tau, batch_shape, tensors[0].device)
    directions, seed_out, z_out = _direction_source(tensors, is_list, seed, z, distribution, batch_dims)
    fresh = z is None  # z regenerated from the seed: each tensor is a temporary the moves may reuse
    pieces = _piece_source(tensors, seed_out, distribution, batch_dims)
    plus, minus = "f(x + tau*z)", "f(x - tau*z)"
    moved = _whole(object(), tensors)

    if restore == "saved":
        with torch.no_grad():
            saved = [p.detach().clone() for p in tensors]
        try:
            _saved_move(tensors, saved, directions, pieces, tau_t, +1, fresh)
            f_plus = _query(closure, plus, batch_shape, moved)
            _saved_move(tensors, saved, directions, pieces, tau_t, -1, fresh)
            f_minus = _query(closure, minus, batch_shape, moved)
        finally:
            with torch.no_grad():
                for p, s in zip(tensors, saved):
                    p.copy_(s)
    else:
        position = 0.0  # current displacement, in units of tau * z
        try:
            _walk_move(tensors, directions, pieces, tau_t, 1.0, fresh)
            position = 1.0
            f_plus = _query(closure, plus, batch_shape, moved)
            _walk_move(tensors, directions, pieces, tau_t, -2.0, fresh)
            position = -1.0
            f_minus = _query(closure, minus, batch_shape, moved)
        finally:
            if position != 0.0:
                _walk_move(tensors, directions, pieces, tau_t, -position, fresh)

    dtype = _value_dtype(tensors, f_plus, f_minus)
    scale = (f_plus.to(dtype) - f_minus.to(dtype)) / (2 * tau_t.to(dtype))
    if distribution == "sphere":
        scale = scale * _event_dim(tensors, batch_dims)
    return DirectionEstimate(
        scale=scale, distribution=distribution, seed=seed_out, z=z_out,
        batch_dims=batch_dims, oracle_calls=2,
    )


def gaussian_two_point(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    seed: int | None = None,
    z: Tensor | Sequence[Tensor] | None = None,
    batch_dims: int = 0,
    restore: str = "saved",
) -> DirectionEstimate:
    """Two-point Gaussian estimate (ZO-SGD / MeZO): ``scale = (f^(x+tau z) - f^(x-tau z)) / (2 tau)``.

    ``z ~ N(0, I)`` regenerated from ``seed`` (only the seed is stored) or the
    explicit ``z`` (stored). ``restore="saved"`` (default) is bitwise;
    ``"regenerate"`` is MeZO's copy-free ``+tau z, -2 tau z, +tau z`` (not bitwise).
    """
    return _direction_two_point(
        params, closure, tau, distribution="gaussian", seed=seed, z=z,
        batch_dims=batch_dims, restore=restore,
    )


def sphere_two_point(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    seed: int | None = None,
    z: Tensor | Sequence[Tensor] | None = None,
    batch_dims: int = 0,
    restore: str = "saved",
) -> DirectionEstimate:
    """Two-point sphere estimate: ``scale = d (f^(x+tau z) - f^(x-tau z)) / (2 tau)``.

    ``z`` uniform on the unit sphere of the whole event space (``d`` its
    dimension); an explicit ``z`` is used as given (not renormalised).
    """
    return _direction_two_point(
        params, closure, tau, distribution="sphere", seed=seed, z=z,
        batch_dims=batch_dims, restore=restore,
    )


#: arXiv 2409.10442's l2-smoothing baseline, ``d (f^(x+tau e) - f^(x-tau e)) / (2 tau) e`` with ``e``
#: uniform on the unit sphere: :func:`sphere_two_point` itself (the same function, another name).
l2_smoothing = sphere_two_point


def rademacher_two_point(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    seed: int | None = None,
    z: Tensor | Sequence[Tensor] | None = None,
    batch_dims: int = 0,
    restore: str = "saved",
) -> DirectionEstimate:
    """Two-point Rademacher estimate: ``z in {-1,+1}^d``, scale as :func:`gaussian_two_point`."""
    return _direction_two_point(
        params, closure, tau, distribution="rademacher", seed=seed, z=z,
        batch_dims=batch_dims, restore=restore,
    )


def forward_difference(
    params: Params,
    closure: Closure,
    tau: float | Tensor,
    *,
    seed: int | None = None,
    z: Tensor | Sequence[Tensor] | None = None,
    f0: float | Tensor | None = None,
    distribution: str = "gaussian",
    batch_dims: int = 0,
    restore: str = "saved",
) -> DirectionEstimate:
    """One-sided estimate ``scale = c (f^(x + tau z) - f0) / tau`` (``c = d`` for the sphere, else 1).

    ``f0 = f^(x)`` is evaluated first (call ``"f(x)"``) unless supplied (a number
    or a tensor of shape ``batch``); ``oracle_calls`` is 2, or 1 with ``f0``.
    """
    tensors, is_list, batch_dims = _as_list(params, batch_dims)
    _check_distribution(distribution)
    check_choice("restore", restore, RESTORE_MODES)
    batch_shape = tuple(tensors[0].shape[:batch_dims])
    tau_t = _tau_tensor(tau, batch_shape, tensors[0].device)
    directions, seed_out, z_out = _direction_source(tensors, is_list, seed, z, distribution, batch_dims)
    fresh = z is None  # z regenerated from the seed: each tensor is a temporary the moves may reuse
    pieces = _piece_source(tensors, seed_out, distribution, batch_dims)
    moved = _whole(object(), tensors)
    if f0 is None:
        base = _query(closure, "f(x)", batch_shape, Perturbation(moved.session, (), ()))
        calls = 2
    else:
        try:
            base = _query(lambda: f0, "f0", batch_shape)
        except NonFiniteOracleError as err:
            raise ValueError(f"f0 must be finite, got {f0!r}") from err
        except ValueError as err:
            raise ValueError(f"f0 must be a number or a tensor of shape {batch_shape}, got {f0!r}") from err
        calls = 1
    call = "f(x + tau*z)"
    if restore == "saved":
        with torch.no_grad():
            saved = [p.detach().clone() for p in tensors]
        try:
            _saved_move(tensors, saved, directions, pieces, tau_t, +1, fresh)
            f_plus = _query(closure, call, batch_shape, moved)
        finally:
            with torch.no_grad():
                for p, s in zip(tensors, saved):
                    p.copy_(s)
    else:
        try:
            _walk_move(tensors, directions, pieces, tau_t, 1.0, fresh)
            f_plus = _query(closure, call, batch_shape, moved)
        finally:
            _walk_move(tensors, directions, pieces, tau_t, -1.0, fresh)
    dtype = _value_dtype(tensors, f_plus, base)
    scale = (f_plus.to(dtype) - base.to(device=f_plus.device, dtype=dtype)) / tau_t.to(dtype)
    if distribution == "sphere":
        scale = scale * _event_dim(tensors, batch_dims)
    return DirectionEstimate(
        scale=scale, distribution=distribution, seed=seed_out, z=z_out,
        batch_dims=batch_dims, oracle_calls=calls,
    )


def forward_grad(
    fn: Callable[..., Tensor],
    x: Params,
    *,
    seed: int | None = None,
    z: Tensor | Sequence[Tensor] | None = None,
    distribution: str = "gaussian",
    batch_dims: int = 0,
) -> DirectionEstimate:
    """Forward-Grad (Baydin et al. 2022): ``scale = <grad fn(x), z>`` by one jvp.

    ``fn`` is functional: ``fn(x) -> value`` of shape ``batch`` for a tensor
    ``x``; for a list of tensors ``fn`` receives a tuple of tensors. The jvp is
    ``torch.func.jvp(fn, (x,), (z,))`` with ``z`` cast to the parameter dtype;
    ``x`` is not modified. ``oracle_calls = 1`` (one forward-mode evaluation).
    For the sphere the scale includes the factor ``d``.
    """
    tensors, is_list, batch_dims = _as_list(x, batch_dims, name="x")
    _check_distribution(distribution)
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    batch_shape = tuple(tensors[0].shape[:batch_dims])
    directions, seed_out, z_out = _direction_source(tensors, is_list, seed, z, distribution, batch_dims)
    zs = [zi.to(p.dtype) for zi, p in zip(directions(), tensors)]
    primals = [p.detach() for p in tensors]
    if is_list:
        _, tangent_out = torch.func.jvp(fn, (tuple(primals),), (tuple(zs),))
    else:
        _, tangent_out = torch.func.jvp(fn, (primals[0],), (zs[0],))
    scale = _query(lambda: tangent_out, "jvp of fn at x along z", batch_shape)
    scale = scale.to(_value_dtype(tensors, scale))
    if distribution == "sphere":
        scale = scale * _event_dim(tensors, batch_dims)
    return DirectionEstimate(
        scale=scale, distribution=distribution, seed=seed_out, z=z_out,
        batch_dims=batch_dims, oracle_calls=1,
    )


def evaluate_at(
    params: Params,
    closure: Closure,
    displacements: Sequence[Tensor | Sequence[Tensor]],
    *,
    batch_dims: int = 0,
) -> Tensor:
    """``f^(x + D_j)`` for each displacement ``D_j``; returns shape ``(len(displacements), *batch)``.

    Each ``D_j`` has the structure of ``params`` (a tensor, or a sequence of
    tensors) with shapes broadcastable to the parameters'. The moved value is
    ``fl(x_saved + D_j)`` computed in the compute dtype; the parameters are
    restored bitwise after every evaluation (also on errors).
    """
    tensors, is_list, batch_dims = _as_list(params, batch_dims)
    batch_shape = tuple(tensors[0].shape[:batch_dims])
    displacements = list(displacements)
    if not displacements:
        raise ValueError("displacements must hold at least one displacement")
    checked: list[list[Tensor]] = []
    for j, disp in enumerate(displacements):
        ds = [disp] if isinstance(disp, Tensor) else list(disp)
        if isinstance(disp, Tensor) and is_list:
            ds = []
        if len(ds) != len(tensors):
            raise ValueError(
                f"displacements[{j}] must hold {len(tensors)} tensor(s) (the structure of params)"
            )
        for di, p in zip(ds, tensors):
            if not isinstance(di, Tensor):
                raise ValueError(f"displacements[{j}] must hold tensors, got {type(di).__name__}")
            try:
                ok = torch.broadcast_shapes(di.shape, p.shape) == p.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(
                    f"displacements[{j}] shape {tuple(di.shape)} does not broadcast to the "
                    f"parameter shape {tuple(p.shape)}"
                )
        checked.append(ds)
    with torch.no_grad():
        saved = [p.detach().clone() for p in tensors]
    values = []
    moved = _whole(object(), tensors)
    try:
        for j, ds in enumerate(checked):
            with torch.no_grad():
                for p, s, di in zip(tensors, saved, ds):
                    cdt = _compute_dtype(p.dtype)
                    p.copy_((s.to(cdt) + di.to(device=p.device, dtype=cdt)).to(p.dtype))
            values.append(_query(closure, f"f(x + D_{j})", batch_shape, moved))
            with torch.no_grad():
                for p, s in zip(tensors, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(tensors, saved):
                p.copy_(s)
    dtype = _value_dtype(tensors, *values)
    return torch.stack([v.to(dtype) for v in values])
