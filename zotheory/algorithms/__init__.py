"""Update rules, one module per paper algorithm (see docs/architecture.md).

:data:`ALGORITHMS` is the registry the drivers use: name -> :class:`AlgorithmInfo`
(module, paper reference, whether the code is an exact transcription, the
oracle cost of one step, and whether the kernel runs batched, i.e. on the synthetic
engine). Every kernel's ``step`` also takes a list of tensors (a model's parameters);
:mod:`zotheory.optim` has one ``torch.optim.Optimizer`` per entry, except the ``constrained`` ones
(their ``step`` takes a constraint set ``Q``; they run on the synthetic engine only). :func:`get_algorithm` returns the module, whose
``init`` / ``update`` / ``step`` follow the contract.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    title: str
    reference: str
    status: str  # "exact" | "named variant" | "published definition (interpretation)" | "first-order reference"
    oracle: str  # "zero-order" | "first-order" | "forward-mode (jvp)"
    calls: Callable[[Mapping[str, Any]], int]  # oracle calls (or gradient / jvp calls) per step
    batched: bool = True  # the kernel takes batch_dims=1 (runs on the synthetic engine)
    # the kernel takes Q= (a zotheory.constraints set): engine runs need RunSpec.constraint; no optimizer
    constrained: bool = False

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.name}")


def _k(opts: Mapping[str, Any]) -> int:
    return int(opts.get("coords_per_step", 1))


ALGORITHMS: dict[str, AlgorithmInfo] = {
    a.name: a
    for a in [
        AlgorithmInfo("jaguar_signsgd", "JAGUAR SignSGD", "Algorithm 1 (seed 003)", "exact",
                      "zero-order", lambda o: 2 * _k(o)),
        AlgorithmInfo("jaguar_muon", "JAGUAR Muon", "Algorithm 2 (seed 003)", "exact",
                      "zero-order", lambda o: 2 * _k(o)),
        AlgorithmInfo("zo_muon", "ZO-Muon", "Algorithm 3 (paper appendix)", "exact",
                      "zero-order", lambda o: 2),
        AlgorithmInfo("zo_sgd", "ZO-SGD (MeZO)", "Ghadimi & Lan 2013; Malladi et al. 2023", "exact",
                      "zero-order", lambda o: 2),
        AlgorithmInfo("zo_signsgd", "ZO-SignSGD", "Liu et al. 2019 (ICLR)", "published definition (interpretation)",
                      "zero-order", lambda o: 2 * int(o.get("queries", 1))),
        AlgorithmInfo("zo_adamm", "ZO-AdaMM", "Chen et al. 2019 (NeurIPS)", "published definition (interpretation)",
                      "zero-order", lambda o: 2),
        AlgorithmInfo("acc_zom", "Acc-ZOM", "Huang et al. 2022 (JMLR)", "published definition (interpretation)",
                      "zero-order", lambda o: 4),
        AlgorithmInfo("zo_sgd_cons", "ZO-SGD-Cons", "Kim et al. 2021; ZO-Bench (Zhang et al. 2024)",
                      "published definition (interpretation)", "zero-order", lambda o: 5),
        AlgorithmInfo("zo_jaguar", "ZO-Jaguar (seed 004)", "seed 004, Algorithm 1", "named variant",
                      "zero-order", lambda o: 2),
        AlgorithmInfo("forward_grad", "Forward-Grad", "Baydin et al. 2022", "exact",
                      "forward-mode (jvp)", lambda o: 1),
        AlgorithmInfo("fo_sgd", "FO-SGD", "Robbins & Monro 1951", "first-order reference", "first-order", lambda o: 1),
        AlgorithmInfo("fo_signsgd_momentum", "FO-SignSGD with momentum (Signum)", "Bernstein et al. 2018",
                      "first-order reference", "first-order", lambda o: 1),
        AlgorithmInfo("fo_muon", "FO-Muon", "Jordan et al. 2024", "first-order reference", "first-order",
                      lambda o: 1),
        AlgorithmInfo("adam", "Adam", "Kingma & Ba 2015", "first-order reference", "first-order", lambda o: 1),
        AlgorithmInfo("lezo", "LeZO (layer-wise sparse ZO-SGD)", "Wang et al. 2024 (arXiv 2410.09823)",
                      "published definition (interpretation)", "zero-order", lambda o: 2, batched=False),
        AlgorithmInfo("jaguar_signsgd_released", "JAGUAR SignSGD (authors' released code)",
                      "evseevgrv/ZO_LLM trainer.py zo_jaguar_step @45a6749", "named variant", "zero-order",
                      lambda o: 2, batched=False),
        AlgorithmInfo("jaguar_fw", "JAGUAR-d / JAGUAR-s in Frank-Wolfe or projected GD",
                      "arXiv 2409.10442 (seed 002)", "exact", "zero-order", lambda o: 2, constrained=True),
    ]
}


class _Bound:
    """A module plus its registry entry (``oracle_calls_per_step`` for drivers)."""

    def __init__(self, info: AlgorithmInfo) -> None:
        self.info = info
        self._module = info.module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def oracle_calls_per_step(self, options: Mapping[str, Any]) -> int:
        return self.info.calls(options)


def get_algorithm(name: str) -> _Bound:
    """The update-rule module called ``name`` (ValueError listing the valid names)."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {sorted(ALGORITHMS)}")
    return _Bound(ALGORITHMS[name])


__all__ = ["ALGORITHMS", "AlgorithmInfo", "get_algorithm"]
