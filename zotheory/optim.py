r"""``torch.optim`` optimizers for every algorithm of the registry: thin adapters over the kernels.

Each class here is an adapter: it keeps parameter groups, a random generator, the
per-parameter kernel states and the counters, checks the hyperparameters, handles the
closure, and calls **the algorithm's own kernel** ``zotheory.algorithms.<name>.step`` once
per step over the list of trainable parameters. The kernel is the one place where the
estimate, the update rule and the move are composed (for one tensor, for a batch of runs
and for a list of tensors); nothing algorithmic is written here. To find an algorithm's
update rule, open ``zotheory/algorithms/<name>.py``; its optimizer is ``OPTIMIZERS[name]``.

Usage (zero-order: the closure returns the loss and must not call ``backward``)::

    opt = zotheory.optim.JaguarSignSGD(model.parameters(), lr=1e-3, tau=1e-3)
    model.eval()                      # dropout off: both perturbed losses see the same network
    for batch in loader:
        with torch.no_grad():
            loss = opt.step(lambda: model(**batch).loss)

Conventions (those of ``torch.optim``):

* Parameters with ``requires_grad=False`` are skipped: never perturbed, never moved, no
  state (a peft LoRA model can be passed as ``model.parameters()``).
* Parameter groups: each group may set its own update hyperparameters (``lr``, ``beta``,
  ``weight_decay``, ...). The hyperparameters of the *estimate* (``tau``,
  ``coords_per_step``, ``mode``, ``restore``, ...) must be the same in every group: there
  is one estimate per step over all groups. JAGUAR draws its coordinates uniformly over the
  concatenation of all groups' trainable parameters (a coordinate's group sets its ``lr``
  and ``beta``); Gaussian methods draw one ``z`` over all of them.
* ``weight_decay`` is MeZO's decoupled weight decay: ``x <- x - lr (D + weight_decay x)``.
* Every hyperparameter is checked at construction **and at every step**, before anything
  moves, so a scheduler or a hand edit of ``param_groups`` that sets ``lr <= 0`` or
  ``tau <= 0`` gets a ``ValueError`` naming ``param_groups[i]['lr']``.
* Zero-order ``step(closure)``: the closure returns the loss at the current parameter values
  (it runs under ``torch.no_grad()``); a closure that calls ``backward`` gets a
  ``ValueError`` saying why. ``step`` returns the mean of the losses it evaluated (an
  ``O(tau^2)`` proxy of the batch loss at no extra forward pass).
* First-order references (``fo_*``, ``adam``): ``step()`` uses ``p.grad`` (set by your
  ``backward``); ``step(closure)`` runs the closure with gradients on: if it called
  ``backward`` itself its ``p.grad`` are used, otherwise the optimizer differentiates the
  loss it returns (``torch.autograd.grad``; ``p.grad`` is left alone).
* Forward-Grad: ``step(fn)`` with a *functional* ``fn(params) -> loss`` taking the tuple of
  trainable parameters (in the optimizer's order); for a model,
  ``zotheory.llm.scoring.functional_loss`` builds one with ``torch.func.functional_call``.
* ``zero_grad`` is harmless. ``state_dict`` / ``load_state_dict`` round-trip everything a
  bitwise resume needs (kernel states in their own dtypes, the generator, the counters,
  every group's hyperparameters).
* A non-finite loss raises :class:`zotheory.estimators.NonFiniteOracleError` with the
  parameters restored and no state changed.

Randomness: every optimizer owns a CPU ``torch.Generator`` seeded by ``seed=``; coordinates
and Gaussian seeds are drawn from it (moved to the parameters' device), so runs are
reproducible and device-independent in their draws.

State and cost per step (``d`` = trainable numbers; buffers in ``promote_types(dtype, float32)``)
---------------------------------------------------------------------------------------------

=========================  ==========================================  ===========================
optimizer (registry name)  forward passes per step                     state (numbers)
=========================  ==========================================  ===========================
JaguarSignSGD              2k (``coords_per_step``; block mode: 2)     <= 2 t k (sparse) or d   
JaguarMuon                 2k (block mode: 2)                          <= 2 t k (sparse) or d   
JaguarSignSGDReleased      2                                           2d (momentum, SGD buffer)
ZOSGD                      2                                           0
ZOSignSGD                  2q (``queries``)                            0
ZOAdaMM                    2                                           3d
ZOMuon                     2                                           0
AccZOM                     4 (2 at the first step)                     2d (v, x_{t-1})
ZOSGDCons                  5                                           0 (+2d transient)
ZOJaguar                   2                                           d
LeZO                       2                                           0
ForwardGrad                1 jvp (about 2-3 forwards)                  0
FOSGD / FOSignSGDMomentum  1 forward + backward                        0 / d
FOMuon / Adam              1 forward + backward                        d / 2d
=========================  ==========================================  ===========================

Transient memory: the Gaussian methods with ``restore="saved"`` keep one copy of the trainable
weights during the estimate (``"regenerate"``: none, MeZO's walk, not bitwise); ``z`` is
regenerated in pieces of 2^20 entries and the elementwise rules update piece by piece
(:mod:`zotheory.algorithms._lists`). JAGUAR's momentum is non-zero only at the coordinates
sampled so far (at most ``t k`` after ``t`` steps), so each tensor keeps it as sorted indices
(int64) + values while they are at most 1/16 of the tensor, and the sign move touches only
those (exact, bitwise the dense pseudocode); past 1/16 (block mode from its first step, or a
saturated tensor) the tensor's momentum is a dense buffer (``jaguar_signsgd``, "State").
JAGUAR Muon orthogonalizes a dense transient of one matrix at a time.

JAGUAR on a model. ``coords_per_step = 1`` is Algorithm 1 exactly; on a model one coordinate
per step touches a negligible fraction of the weights, so ``JaguarSignSGD`` and ``JaguarMuon``
default to ``coords_per_step = 8`` (16 forward passes a step, a named generalisation). Every
coordinate with non-zero momentum moves by ``lr`` at every step however long ago it was
sampled, so the weights drift by about ``lr * t`` (``shared/PAPER.md``); compare methods at
equal forward passes (``oracle_calls``). ``mode="block"`` is the authors' released-code
estimate (not Algorithm 1); ``JaguarSignSGDReleased`` is their whole released step.

Precision rule: perturbations are computed in ``promote_types(param dtype, float32)`` from the
saved values and cast to the parameter dtype; parameters are restored from the saved values
(bitwise in fp32/bf16/fp16). The loss the closure returns should be float32
(:mod:`zotheory.llm.scoring` makes it so): the difference ``f+ - f-`` and the division by
``2 tau`` are then float32 arithmetic. The move ``lr * D`` is computed in float32 and cast to
the parameter dtype before the subtraction: with bf16 weights a move below half an ulp of a
weight is lost, and ``tau`` is realised only to the parameter's precision. Train in float32
unless memory forces bf16.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, ClassVar, Iterable

import torch

from ._checks import (
    check_choice,
    check_in_range,
    check_int_at_least,
    check_nonnegative,
    check_positive,
)
from .algorithms import ALGORITHMS, get_algorithm
from .estimators import RESTORE_MODES, NonFiniteOracleError
from .orthogonalize import METHODS as ORTHOGONALIZATIONS

__all__ = [
    "ZerothOrderOptimizer",
    "METHODS",
    "OPTIMIZERS",
    "KernelOptimizer",
    "make_optimizer",
    "hyperparameter_names",
    "state_numel",
    "state_nbytes",
    "NonFiniteOracleError",
]

# --------------------------------------------------------------------------- hyperparameter checks


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _unit(name: str, value: Any) -> None:  # [0, 1)
    check_in_range(name, value, 0.0, 1.0, low_closed=True, high_closed=False)


def _ns_steps(name: str, value: Any) -> None:
    if value is not None:
        check_int_at_least(name, value, 1)


def _layer(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
        raise ValueError(f"{name} must be None or an integer >= -1 (-1: always active), got {value!r}")


#: How every hyperparameter name is checked (at construction and at every step).
CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "lr": check_positive,
    "tau": check_positive,
    "beta": _unit,
    "beta1": _unit,
    "beta2": _unit,
    "momentum": _unit,
    "eps": check_positive,
    "weight_decay": check_nonnegative,
    "alpha": lambda n, v: check_in_range(n, v, 0.0, 1.0, low_closed=False, high_closed=True),
    "coords_per_step": lambda n, v: check_int_at_least(n, v, 1),
    "queries": lambda n, v: check_int_at_least(n, v, 1),
    "drop_layers": lambda n, v: None if v is None else check_int_at_least(n, v, 0),
    "mode": lambda n, v: check_choice(n, v, ("coordinate", "block")),
    "block_fraction": lambda n, v: check_in_range(n, v, 0.0, 1.0, low_closed=False, high_closed=True),
    "restore": lambda n, v: check_choice(n, v, RESTORE_MODES),
    "orthogonalization": lambda n, v: check_choice(n, v, ORTHOGONALIZATIONS),
    "ns_steps": _ns_steps,
    "non_matrix": lambda n, v: check_choice(n, v, ("sign", "column")),
    "reset_momentum": _bool,
    "nesterov": _bool,
    "scale_by_shape": _bool,
    "layer": _layer,
}

_NOT_HYPER = {"params", "param_names"}

_BACKWARD_IN_CLOSURE = (
    "the closure called backward(): zero-order methods need only the loss value. Return the loss "
    "without calling backward (step runs the closure under torch.no_grad(), twice or more per step, "
    "at perturbed parameters, so a gradient would be wasted work and memory)"
)


def _is_cache(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("cache"))


def _fields(state: Any) -> dict[str, Any]:
    """A kernel state as a plain dict (tensors, numbers, None) without execution caches
    (re-derived on load); the ParamSpec is rebuilt from the parameter."""
    from .algorithms._zo_common import ParamSpec

    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if not isinstance(getattr(state, f.name), ParamSpec) and not _is_cache(f)}


class KernelOptimizer(torch.optim.Optimizer):
    """The adapter every algorithm's optimizer is (see the module doc).

    Subclasses set ``algorithm`` (the registry name), ``kind`` (``"zero-order"``,
    ``"first-order"`` or ``"forward-mode"``), ``estimate_hyperparameters`` (one value for
    all groups), ``init_hyperparameters`` (given to the kernel's ``init``) and pass their
    defaults to ``__init__``.
    """

    algorithm: ClassVar[str] = ""
    kind: ClassVar[str] = "zero-order"
    zero_order: ClassVar[bool] = True  # needs no backward (zero-order and forward-mode methods)
    estimate_hyperparameters: ClassVar[tuple[str, ...]] = ()
    init_hyperparameters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *, seed: int = 0) -> None:
        for name, value in defaults.items():
            CHECKS[name](name, value)
        seed = check_int_at_least("seed", seed, 0)
        super().__init__(params, defaults)
        self._check_groups()
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.steps = 0  # completed steps
        self.oracle_calls = 0  # closure evaluations (forward passes on a batch), failed ones included
        for p, group in self._trainable():
            self._kernel_state(p, group)

    # -- names kept from the first optimizer layer ---------------------------------------

    @property
    def method(self) -> str:
        return self.algorithm

    @property
    def kernel(self) -> Any:
        """The algorithm's module (``init`` / ``update`` / ``step``)."""
        return get_algorithm(self.algorithm)

    @property
    def hp(self) -> dict[str, Any]:
        """The hyperparameters of the first group."""
        return {k: v for k, v in self.param_groups[0].items() if k not in _NOT_HYPER}

    @property
    def params(self) -> list[torch.Tensor]:
        """The trainable parameters (``requires_grad=True``), in group order."""
        return [p for p, _ in self._trainable()]

    @property
    def kernel_states(self) -> list[Any]:
        """The kernel state of every trainable parameter (``zotheory.algorithms.<name>`` states)."""
        return [self._kernel_state(p, g) for p, g in self._trainable()]

    # -- groups, checks, states ----------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if getattr(self, "generator", None) is not None:  # after construction: check, make states
            self._check_groups()
            for p in param_group["params"]:
                if p.requires_grad:
                    self._kernel_state(p, self.param_groups[-1])

    def _check_groups(self) -> None:
        """Every group's hyperparameters (ValueError naming ``param_groups[i]['name']``), and
        the estimate's hyperparameters equal across groups."""
        for i, group in enumerate(self.param_groups):
            for name in self.defaults:  # other keys (a scheduler's initial_lr, ...) are not ours
                CHECKS[name](f"param_groups[{i}]['{name}']", group[name])
            for p in group["params"]:
                if not p.is_floating_point():
                    raise ValueError(f"param_groups[{i}] holds a parameter of dtype {p.dtype}; "
                                     f"parameters must be floating-point")
        for name in self.estimate_hyperparameters:
            values = [g[name] for g in self.param_groups]
            if any(v != values[0] for v in values[1:]):
                raise ValueError(f"{name} must be the same in every parameter group (one estimate over all "
                                 f"of them), got {values}")

    def _trainable(self) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        return [(p, g) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _kernel_state(self, p: torch.Tensor, group: dict[str, Any]) -> Any:
        st = self.state[p]
        if "kernel" not in st:
            init_options = {k: group[k] for k in self.init_hyperparameters}
            st["kernel"] = self.kernel.init([p], **init_options)[0]
        return st["kernel"]

    # -- the step ------------------------------------------------------------------------

    def _kernel_arguments(self, pairs: list[tuple[torch.Tensor, dict[str, Any]]]) -> dict[str, Any]:
        """``gamma`` and the group hyperparameters, per tensor; the estimate's, once."""
        args: dict[str, Any] = {"gamma": [g["lr"] for _, g in pairs]}
        for name in self.defaults:
            if name in ("lr", "layer") or name in self.init_hyperparameters:
                continue
            if name in self.estimate_hyperparameters:
                args[name] = pairs[0][1][name]
            else:
                args[name] = [g[name] for _, g in pairs]
        return args

    #: Set by ``zotheory.llm.hf.ZOTrainer`` after it stepped inside ``training_step``: Trainer's
    #: closure-less ``optimizer.step()`` that follows belongs to that step and returns at once.
    _trainer_stepped: bool = False

    @torch.no_grad()
    def step(self, closure: Callable[..., Any] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None and self._trainer_stepped:
            self._trainer_stepped = False
            return None  # type: ignore[return-value]
        self._check_groups()
        pairs = self._trainable()
        if not pairs:
            raise ValueError(f"{type(self).__name__} has no parameter with requires_grad=True to optimize")
        params = [p for p, _ in pairs]
        states = [self._kernel_state(p, g) for p, g in pairs]
        args = self._kernel_arguments(pairs)
        args.update(self._extra_arguments(pairs))
        values: list[float] = []
        oracle, extra = self._oracle(closure, params, values)
        new_states = self.kernel.step(params, oracle, states, generator=self.generator, **args, **extra)
        for p, s in zip(params, new_states):
            self.state[p]["kernel"] = s
        self.steps += 1
        if closure is None:  # torch.optim's convention: step() returns the closure's loss, or None
            return None  # type: ignore[return-value]
        return torch.tensor(sum(values) / len(values) if values else float("nan"))

    def _extra_arguments(self, pairs: list[tuple[torch.Tensor, dict[str, Any]]]) -> dict[str, Any]:
        return {}

    def _oracle(self, closure, params, values) -> tuple[Any, dict[str, Any]]:
        """The oracle the kernel gets (and extra kernel arguments, e.g. ``grad=``)."""
        if closure is None or not callable(closure):
            raise ValueError(f"{type(self).__name__}.step needs a closure returning the loss "
                             f"(zero-order: evaluated at perturbed parameters; do not call backward in it)")

        def counted():
            self.oracle_calls += 1
            try:
                value = closure()
            except RuntimeError as err:
                if "does not require grad" in str(err) or "does not have a grad_fn" in str(err):
                    raise ValueError(_BACKWARD_IN_CLOSURE) from err
                raise
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                values.append(float(value.detach()))
            elif isinstance(value, (int, float)):
                values.append(float(value))
            return value

        return counted, {}

    # -- state_dict ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``state`` (per parameter index: the kernel state's fields and its ``rule``),
        ``param_groups`` (torch's format), and the generator and counters. Tensors are
        referenced, not copied."""
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups, state = [], {}
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        for p, _ in self._trainable():
            kernel = self.state[p]["kernel"]
            state[index[id(p)]] = {"rule": type(kernel).__name__, **_fields(kernel)}
        return {"algorithm": self.algorithm, "state": state, "param_groups": groups,
                "generator": self.generator.get_state(), "steps": self.steps, "oracle_calls": self.oracle_calls}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same algorithm over parameters of the same
        shapes and groups: kernel buffers keep their saved dtypes (cloned to the parameters'
        device), every group's hyperparameters come back, and so do the generator and counters."""
        algorithm = state_dict.get("algorithm")
        if algorithm != self.algorithm:
            raise ValueError(f"state_dict is for algorithm {algorithm!r}, this optimizer is {self.algorithm!r}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("state_dict was saved for other parameter groups (another count of groups or parameters)")
        ordered = [p for g in self.param_groups for p in g["params"]]
        new_states = {}
        for key, saved in state_dict["state"].items():
            i = int(key)
            if i >= len(ordered):
                raise ValueError(f"state_dict holds a state for parameter {i}, the optimizer has {len(ordered)}")
            p = ordered[i]
            group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
            init_options = {k: group[k] for k in self.init_hyperparameters}
            fresh = self.kernel.init([p], **init_options)[0]
            if saved.get("rule") != type(fresh).__name__:
                raise ValueError(f"state_dict state {i} is a {saved.get('rule')}, this parameter needs a "
                                 f"{type(fresh).__name__} (another shape or rule)")
            load = getattr(self.kernel, "load_state", None)
            if load is not None:  # a kernel with its own state forms (JAGUAR: sparse or dense momentum)
                new_states[id(p)] = (p, load(fresh, saved, where=f"state_dict state {i}"))
                continue
            updates = {}
            for name, current in _fields(fresh).items():
                value = saved.get(name, current)
                if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
                    if value.shape != current.shape or value.dtype != current.dtype:
                        raise ValueError(f"state_dict state {i}.{name} has shape {tuple(value.shape)} and dtype "
                                         f"{value.dtype}, the parameter needs {tuple(current.shape)} {current.dtype}")
                    value = value.detach().to(current.device).clone()
                elif isinstance(value, torch.Tensor):
                    value = value.detach().to(p.device).clone()
                updates[name] = value
            new_states[id(p)] = (p, dataclasses.replace(fresh, **updates))
        for g, s in zip(self.param_groups, saved_groups):
            for name, value in s.items():
                if name != "params":
                    g[name] = value
        self._check_groups()
        for p, kernel in new_states.values():
            self.state[p]["kernel"] = kernel
        self.generator.set_state(state_dict["generator"].clone())
        self.steps = int(state_dict["steps"])
        self.oracle_calls = int(state_dict["oracle_calls"])


ZerothOrderOptimizer = KernelOptimizer


class _FirstOrder(KernelOptimizer):
    """First-order references: gradients from ``p.grad`` or from the closure's loss."""

    kind = "first-order"
    zero_order = False

    def _oracle(self, closure, params, values):
        if closure is None:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            self.oracle_calls += 1
            return None, {"grad": grads}
        if not callable(closure):
            raise ValueError(f"closure must be callable, got {type(closure).__name__}")
        for p in params:
            p.grad = None
        self.oracle_calls += 1
        with torch.enable_grad():
            loss = closure()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("the closure must return the loss as a one-element tensor")
            if not bool(torch.isfinite(loss.detach()).all()):
                raise NonFiniteOracleError(f"the loss f(x) is not finite: {loss.item()}")
            values.append(float(loss.detach()))
            if any(p.grad is not None for p in params):  # the closure ran backward (torch's convention)
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            else:
                if not loss.requires_grad:
                    raise ValueError("the closure's loss does not require grad: a first-order step needs a loss "
                                     "computed with gradients on")
                grads = [g if g is not None else torch.zeros_like(p)
                         for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]
        return None, {"grad": grads}


class _ForwardMode(KernelOptimizer):
    """Forward-Grad: the closure is a functional ``fn(params) -> loss`` (one jvp per step)."""

    kind = "forward-mode"

    def _oracle(self, closure, params, values):
        if closure is None or not callable(closure):
            raise ValueError("ForwardGrad.step needs a functional closure fn(params) -> loss taking the tuple of "
                             "trainable parameters (see zotheory.llm.scoring.functional_loss)")
        try:
            inspect.signature(closure).bind(tuple(params))
        except (TypeError, ValueError):
            raise ValueError("ForwardGrad.step needs fn(params) -> loss taking ONE argument, the tuple of "
                             "trainable parameters (the jvp needs them as inputs)") from None
        shapes = [p.shape for p in params]

        def fn(tensors):
            self.oracle_calls += 1
            value = closure(tuple(t.reshape(s) for t, s in zip(tensors, shapes)))
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                values.append(float(value.detach()))
            return value

        return fn, {}


def _optimizer(algorithm: str, kind: type[KernelOptimizer], estimate: tuple[str, ...] = (),
               init: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: bind an optimizer class to its registry entry."""

    def bind(cls: type) -> type:
        cls.algorithm = algorithm
        cls.estimate_hyperparameters = estimate
        cls.init_hyperparameters = init
        info = ALGORITHMS.get(algorithm)  # tests check that every class has its registry entry
        title = f"{info.title} ({info.reference}; {info.status})" if info is not None else algorithm
        cls.__doc__ = (f"{title} over a model's trainable parameters.\n\n"
                       f"The update rule, its pseudocode and deviations: ``zotheory.algorithms.{algorithm}``. "
                       f"{cls.__doc__ or ''}")
        return cls

    return bind


_JAGUAR_ESTIMATE = ("tau", "coords_per_step", "mode", "block_fraction", "reset_momentum")
_GAUSS = ("tau", "restore")


@_optimizer("jaguar_signsgd", KernelOptimizer, _JAGUAR_ESTIMATE)
class JaguarSignSGD(KernelOptimizer):
    """``coords_per_step = k`` coordinates per step (2k forward passes; 1 is Algorithm 1
    exactly, the default 8 is a named generalisation), ``mode="block"`` the released code's
    estimate, ``reset_momentum`` its momentum reset. State: a float32 momentum per tensor, kept
    as indices + values while it holds at most 1/16 of the tensor."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, beta: float = 0.9, coords_per_step: int = 8,
                 mode: str = "coordinate", block_fraction: float = 0.1, reset_momentum: bool = False,
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, beta=beta, coords_per_step=coords_per_step, mode=mode,
                                      block_fraction=block_fraction, reset_momentum=reset_momentum,
                                      weight_decay=weight_decay), seed=seed)


@_optimizer("jaguar_muon", KernelOptimizer, _JAGUAR_ESTIMATE, ("non_matrix",))
class JaguarMuon(KernelOptimizer):
    """Matrices move by ``-lr NS(M)``; others by ``non_matrix`` (``"sign"``: JAGUAR SignSGD's
    rule; ``"column"``). ``orthogonalization`` ``"ns3"`` (K = ``ns_steps`` or 10) is the
    pseudocode's. State: a float32 momentum per tensor (sparse while small, as JaguarSignSGD's)."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, beta: float = 0.9, coords_per_step: int = 8,
                 mode: str = "coordinate", block_fraction: float = 0.1, reset_momentum: bool = False,
                 orthogonalization: str = "ns3", ns_steps: int | None = None, non_matrix: str = "sign",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, beta=beta, coords_per_step=coords_per_step, mode=mode,
                                      block_fraction=block_fraction, reset_momentum=reset_momentum,
                                      orthogonalization=orthogonalization, ns_steps=ns_steps,
                                      non_matrix=non_matrix, weight_decay=weight_decay), seed=seed)


@_optimizer("jaguar_signsgd_released", KernelOptimizer, ("tau", "block_fraction"))
class JaguarSignSGDReleased(KernelOptimizer):
    """The authors' released code: a 10% x 10% block per tensor, momentum reset every step,
    torch SGD momentum (``momentum``) on the sign direction. State: two buffers per tensor."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, beta: float = 0.9, momentum: float = 0.9,
                 block_fraction: float = 0.1, weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, beta=beta, momentum=momentum, block_fraction=block_fraction,
                                      weight_decay=weight_decay), seed=seed)


@_optimizer("zo_sgd", KernelOptimizer, _GAUSS)
class ZOSGD(KernelOptimizer):
    """MeZO: ``x <- x - lr (g z + weight_decay x)``. ``restore="regenerate"`` is MeZO's copy-free walk. No state."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, restore: str = "saved",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, restore=restore, weight_decay=weight_decay), seed=seed)


@_optimizer("zo_signsgd", KernelOptimizer, _GAUSS + ("queries",))
class ZOSignSGD(KernelOptimizer):
    """``x <- x - lr sign(mean_q g_j z_j)``; ``queries`` estimates per step (2 forward passes each). No state."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, queries: int = 1, restore: str = "saved",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, queries=queries, restore=restore, weight_decay=weight_decay),
                         seed=seed)


@_optimizer("zo_adamm", KernelOptimizer, _GAUSS)
class ZOAdaMM(KernelOptimizer):
    """AMSGrad moments on the Gaussian estimate. State: three float32 buffers per tensor."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, restore: str = "saved", weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, beta1=beta1, beta2=beta2, eps=eps, restore=restore,
                                      weight_decay=weight_decay), seed=seed)


@_optimizer("zo_muon", KernelOptimizer, _GAUSS, ("non_matrix",))
class ZOMuon(KernelOptimizer):
    """Matrices move by ``-lr NS(g Z)``; others by ``non_matrix`` (``"sign"``: ZO-SignSGD's rule). No state."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, orthogonalization: str = "ns3",
                 ns_steps: int | None = None, non_matrix: str = "sign", restore: str = "saved",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, orthogonalization=orthogonalization, ns_steps=ns_steps,
                                      non_matrix=non_matrix, restore=restore, weight_decay=weight_decay), seed=seed)


@_optimizer("acc_zom", KernelOptimizer, _GAUSS)
class AccZOM(KernelOptimizer):
    """STORM-type momentum ``v`` with ``alpha``; 4 forward passes per step (2 at the first).
    State: ``v`` and ``x_{t-1}`` (two copies of the trainable weights)."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, alpha: float = 0.1, restore: str = "saved",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, alpha=alpha, restore=restore, weight_decay=weight_decay),
                         seed=seed)


@_optimizer("zo_sgd_cons", KernelOptimizer, _GAUSS)
class ZOSGDCons(KernelOptimizer):
    """Keeps the best of ``x``, ``x - lr g z``, ``x + lr g z``; 5 forward passes per step. No state."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, restore: str = "saved",
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, restore=restore, weight_decay=weight_decay), seed=seed)


@_optimizer("zo_jaguar", KernelOptimizer, ("tau",))
class ZOJaguar(KernelOptimizer):
    """Seed 004's ZO-Jaguar: one row (of all the rows of all tensors) per step, ``sign * tau``
    written into a persistent estimate that every tensor moves by. State: one buffer per tensor."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, weight_decay: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, weight_decay=weight_decay), seed=seed)


@_optimizer("lezo", KernelOptimizer, ("tau", "restore", "drop_layers"))
class LeZO(KernelOptimizer):
    """ZO-SGD on the layers left after dropping ``drop_layers`` random transformer blocks per
    step. The layer of each parameter comes from its name when the optimizer gets
    ``model.named_parameters()`` (``lezo.layer_ids``), or from a group's ``layer`` key
    (-1: always active). ``drop_layers`` None: half of the blocks. No state."""

    def __init__(self, params, lr: float = 1e-3, *, tau: float = 1e-3, drop_layers: int | None = None,
                 layer: int | None = None, restore: str = "saved", weight_decay: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, tau=tau, drop_layers=drop_layers, layer=layer, restore=restore,
                                      weight_decay=weight_decay), seed=seed)

    def _extra_arguments(self, pairs):
        from .algorithms import lezo

        layers = []
        for p, g in pairs:
            if g.get("layer") is not None:
                layers.append(int(g["layer"]))
            elif "param_names" in g:
                name = g["param_names"][next(i for i, q in enumerate(g["params"]) if q is p)]
                layers.append(lezo.layer_ids([name])[0])
            else:
                raise ValueError("LeZO needs each parameter's layer: pass model.named_parameters(), or parameter "
                                 "groups with a 'layer' key (-1: always active)")
        out: dict[str, Any] = {"layers": layers}
        if pairs[0][1]["drop_layers"] is None:
            out["drop_layers"] = len({i for i in layers if i >= 0}) // 2
        return out


@_optimizer("forward_grad", _ForwardMode)
class ForwardGrad(_ForwardMode):
    """``x <- x - lr <grad f, z> z`` with the directional derivative from one jvp
    (``torch.func.jvp``). ``step(fn)`` needs a functional ``fn(params) -> loss``. No state."""

    def __init__(self, params, lr: float = 1e-3, *, weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay), seed=seed)


@_optimizer("fo_sgd", _FirstOrder)
class FOSGD(_FirstOrder):
    """``x <- x - lr grad``. No state."""

    def __init__(self, params, lr: float = 1e-3, *, weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay), seed=seed)


@_optimizer("fo_signsgd_momentum", _FirstOrder)
class FOSignSGDMomentum(_FirstOrder):
    """Signum: ``m <- beta m + (1 - beta) grad``, ``x <- x - lr sign(m)``. State: a momentum per tensor."""

    def __init__(self, params, lr: float = 1e-3, *, beta: float = 0.9, weight_decay: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay), seed=seed)


@_optimizer("fo_muon", _FirstOrder, (), ("non_matrix",))
class FOMuon(_FirstOrder):
    """Muon (momentum, Nesterov, quintic Newton-Schulz, shape factor) on matrices; others by
    ``non_matrix`` (``"sign"``: Signum's rule). State: a momentum per tensor."""

    def __init__(self, params, lr: float = 1e-3, *, beta: float = 0.95, nesterov: bool = True,
                 orthogonalization: str = "ns5", ns_steps: int | None = None, scale_by_shape: bool = True,
                 non_matrix: str = "sign", weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, beta=beta, nesterov=nesterov, orthogonalization=orthogonalization,
                                      ns_steps=ns_steps, scale_by_shape=scale_by_shape, non_matrix=non_matrix,
                                      weight_decay=weight_decay), seed=seed)


@_optimizer("adam", _FirstOrder)
class Adam(_FirstOrder):
    """Adam (bias-corrected; ``weight_decay`` decoupled as AdamW). State: two moments per tensor."""

    def __init__(self, params, lr: float = 1e-3, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay),
                         seed=seed)


# --------------------------------------------------------------------------- registry

_CLASSES = (JaguarSignSGD, JaguarMuon, JaguarSignSGDReleased, ZOSGD, ZOSignSGD, ZOAdaMM, ZOMuon, AccZOM,
            ZOSGDCons, ZOJaguar, LeZO, ForwardGrad, FOSGD, FOSignSGDMomentum, FOMuon, Adam)
#: One optimizer per registry entry (``zotheory.algorithms.ALGORITHMS``), same names.
OPTIMIZERS: dict[str, type[KernelOptimizer]] = {cls.algorithm: cls for cls in _CLASSES if cls.algorithm in ALGORITHMS}
METHODS = tuple(OPTIMIZERS)
__all__ += [cls.__name__ for cls in OPTIMIZERS.values()]


def hyperparameter_names(method: str) -> tuple[str, ...]:
    """Keyword hyperparameters the method's optimizer accepts (besides ``params`` and ``lr``)."""
    check_choice("method", method, METHODS)
    sig = inspect.signature(OPTIMIZERS[method].__init__)
    return tuple(n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def make_optimizer(method: str, params: Iterable[Any], *, lr: float, **hyperparameters: Any) -> KernelOptimizer:
    """The optimizer for ``method`` over ``params``; unknown hyperparameter names raise ``ValueError``."""
    check_choice("method", method, METHODS)
    valid = hyperparameter_names(method)
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for method {method!r}; valid: {sorted(valid)}")
    return OPTIMIZERS[method](params, lr, **hyperparameters)


def _state_tensors(optimizer: KernelOptimizer) -> Iterable[torch.Tensor]:
    for s in optimizer.kernel_states:
        for f in dataclasses.fields(s):
            value = getattr(s, f.name)
            if isinstance(value, torch.Tensor) and not _is_cache(f):
                yield value


def state_numel(optimizer: KernelOptimizer) -> int:
    """Numbers held in the optimizer's per-tensor state buffers (execution caches excluded; a
    sparse JAGUAR momentum counts its indices and its values)."""
    return sum(t.numel() for t in _state_tensors(optimizer))


def state_nbytes(optimizer: KernelOptimizer) -> int:
    """Bytes of those buffers (float32 moments: 4 a number; a sparse JAGUAR entry: 8 + 4)."""
    return sum(t.numel() * t.element_size() for t in _state_tensors(optimizer))
