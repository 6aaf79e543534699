r"""Data-parallel fine-tuning on ``torch.distributed``: zero-order steps exchange scalars only.

Why it is cheap. A zero-order step needs the loss at a few perturbed points
(``f(x + tau e_i)``, ``f(x - tau e_i)``, ``f(x +- tau z)``), never a gradient.
Every worker (a *rank*) holds the full model (or its LoRA adapters) and builds
the optimizer with the same seed, so every rank draws the same
coordinates / Gaussian seeds from the optimizer's own ``torch.Generator``
(:mod:`zotheory.optim`) and perturbs the same entries. Each rank evaluates
the oracle on **its own shard** of the step's batch; the wrapped closure then
all-reduces the two numbers ``[mean_loss_r * n_r, n_r]`` (float64) and returns
``sum_r mean_r n_r / sum_r n_r``: the mean loss over the **union batch**. The
update that follows is computed from identical numbers on every rank, so the
weights and every optimizer state (JAGUAR's momentum, ZO-AdaMM's moments, the
generator) stay replicated with **no parameter traffic**. Per step that is one
all-reduce of 16 bytes per oracle call: 2 for ZO-SGD / ZO-Muon / ZO-AdaMM and
``mode="block"``, ``2k`` for JAGUAR with ``k`` coordinates, ``2q`` for
ZO-SignSGD with ``q`` queries. First-order DDP sends every trainable gradient
(``sum numel * element_size`` bytes) per step.

Shards. The step's global batch (the same ``batch_size`` examples, in the same
fixed-seed order, as a single-process run: every rank runs the same
:class:`zotheory.llm.train.DataOrder`) is cut into ``world_size`` contiguous
shards whose sizes differ by at most one (``numpy.array_split``'s rule,
:func:`shard_bounds`); uneven shards are exact because the losses are weighted
by shard size. ``batch_size < world_size`` (a rank with nothing to evaluate) is
a ``ValueError`` naming ``batch_size``.

What is exact and what is a tolerance.

* Across ranks: **bitwise identical** weights and optimizer states (every rank
  computes the update from the same all-reduced numbers). :meth:`DataParallel.check_replicas`
  compares a sha256 of every rank's trainable weights at each checkpoint and at
  the end, and raises if they differ.
* Against a single process: :class:`SimulatedDataParallel` runs the same
  shards one after the other in one process and combines them with the same
  float64 arithmetic in rank order; with **2 ranks** it is **bitwise** equal to
  the 2-process run (the all-reduce of two operands is ``a + b``, commutative).
  With more ranks the all-reduce may sum in another order (last-bit float64
  differences in the combined loss). Against the plain single-process loop
  (one forward pass over the whole batch) the loss differs by float32
  rounding (forward passes over differently padded rows, another summation
  order): about ``1e-7`` relative per oracle value, which a ZO estimate divides
  by ``2 tau``; the trajectories agree to a tolerance, not bitwise.

First-order references (``fo_sgd``, ``adam``) run as DDP would: each rank
back-propagates ``(n_r / N) * mean_loss_r``; the gradients are all-reduced
(SUM, one flat buffer per dtype, in parameter order) so every rank holds the
gradient of the union-batch mean loss; the loss scalars travel as for ZO. The
bytes are counted like everything else (:attr:`CommStats`).

Evaluation is sharded the same way: each rank scores its contiguous slice of
the dev/test examples and the float64 triple ``[correct, sum of losses, n]`` is
all-reduced. Accuracy is exact (integer counts); the loss differs from the
single-process mean by the summation order only.

Files and printing: only rank 0 writes ``log.parquet`` / ``evals.parquet`` /
``result.json`` / ``checkpoint.pt`` and prints; ``out_dir`` must be visible to
every rank (one machine, or a shared file system) because a resumed run reads
the checkpoint on every rank. The communication counters (:class:`CommStats`,
``result.json["parallel"]["communication"]``) are saved in the checkpoint and a
resumed run continues from them: they count every segment of the run (a resume
adds its own replica check).

Process group. :func:`from_env` detects ``torchrun`` through ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` and initialises the default group: backend
``nccl`` when the run's device resolves to CUDA (rank ``r`` uses
``cuda:LOCAL_RANK``), ``gloo`` on CPU; with a timeout
(``ZOTHEORY_DIST_TIMEOUT`` seconds, default 600) so that a rank whose peer died
without closing its connections raises instead of waiting forever. (Under
``torchrun`` a dead worker makes the agent stop the others at once; a
``gloo`` peer whose socket closes raises immediately.) The run then stops;
``--resume`` continues bitwise from rank 0's last atomic checkpoint.

:func:`launch` runs ``python -m torch.distributed.run --standalone
--nproc-per-node N -m zotheory finetune ...`` (``zotheory finetune --nproc N``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

__all__ = [
    "CommStats",
    "DataParallel",
    "SimulatedDataParallel",
    "ZO_BYTES_PER_CALL",
    "torchrun_env",
    "from_env",
    "shard_bounds",
    "shard_sizes",
    "launch",
    "launch_command",
    "argv_from_namespace",
    "shutdown",
    "gradient_bytes",
]

TIMEOUT_ENV = "ZOTHEORY_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
#: Bytes one rank puts on the wire per oracle call of a zero-order step: ``[loss * n, n]`` in float64.
ZO_BYTES_PER_CALL = 2 * 8

LossFactory = Callable[[Sequence[Any]], Callable[[], torch.Tensor]]


# --------------------------------------------------------------------------- environment and shards


def torchrun_env() -> dict[str, int] | None:
    """``{"world_size", "rank", "local_rank"}`` from torchrun's variables, or ``None`` outside torchrun.

    ``WORLD_SIZE`` marks a torchrun (or ``torch.distributed``-style) launch; ``RANK`` and
    ``LOCAL_RANK`` must then be set too (``ValueError`` naming the variable otherwise).
    """
    if "WORLD_SIZE" not in os.environ:
        return None
    out: dict[str, int] = {}
    for var, key in (("WORLD_SIZE", "world_size"), ("RANK", "rank"), ("LOCAL_RANK", "local_rank")):
        text = os.environ.get(var)
        try:
            out[key] = int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"environment variable {var} must be an integer under torchrun, got {text!r}") from None
    if out["world_size"] < 1 or not 0 <= out["rank"] < out["world_size"] or out["local_rank"] < 0:
        raise ValueError(f"inconsistent torchrun environment: WORLD_SIZE={out['world_size']}, "
                         f"RANK={out['rank']}, LOCAL_RANK={out['local_rank']}")
    return out


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous shard of ``n`` items (sizes differ by at most one,
    the larger ones first: ``numpy.array_split``'s rule)."""
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"shard_bounds needs n >= 0, world_size >= 1, 0 <= rank < world_size; "
                         f"got n={n}, world_size={world_size}, rank={rank}")
    q, r = divmod(n, world_size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (1 if rank < r else 0)


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Shard size of every rank (see :func:`shard_bounds`)."""
    return [hi - lo for lo, hi in (shard_bounds(n, world_size, r) for r in range(world_size))]


def gradient_bytes(params: Sequence[torch.Tensor]) -> int:
    """What first-order DDP all-reduces per step: every trainable gradient, ``sum numel * element_size``."""
    return sum(p.numel() * p.element_size() for p in params)


@dataclass
class CommStats:
    """All-reduce / all-gather calls and the bytes of the tensors this rank passed, per purpose.

    Bytes are the payload one rank hands to the collective (``numel * element_size``); the
    backend's algorithm (ring, tree) moves a small multiple of it over the links.
    """

    calls: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, tensor: torch.Tensor) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + tensor.numel() * tensor.element_size()

    def as_dict(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "bytes": dict(self.bytes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "CommStats":
        """The counters of :meth:`as_dict` (``None`` or ``{}``: zero). A resumed run continues from
        the counters its checkpoint saved, so ``result.json`` counts every segment."""
        d = d or {}
        return cls(calls={str(k): int(v) for k, v in (d.get("calls") or {}).items()},
                   bytes={str(k): int(v) for k, v in (d.get("bytes") or {}).items()})


# --------------------------------------------------------------------------- the shared logic


def _eval_sums(model, tok, examples: Sequence[Any], batch_size: int | None, device: torch.device) -> torch.Tensor:
    """float64 ``[correct, sum of losses, n]`` on ``examples`` (zeros for an empty shard)."""
    from .scoring import predict, score

    if not examples:
        return torch.zeros(3, dtype=torch.float64, device=device)
    s = score(model, tok, examples, batch_size)
    labels = torch.tensor([ex.label for ex in examples], device=s.device)
    correct = (predict(s) == labels).double().sum()
    loss_sum = (-s[torch.arange(len(examples), device=s.device), labels]).double().sum()
    n = torch.tensor(float(len(examples)), dtype=torch.float64, device=s.device)
    return torch.stack([correct, loss_sum, n]).to(device)


def _eval_result(sums: torch.Tensor) -> dict[str, float]:
    correct, loss_sum, n = (float(v) for v in sums.cpu())
    return {"accuracy": correct / n, "loss": loss_sum / n, "n": int(n)}


def _loss_pair(value: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """float64 ``[value * n, n]`` (the numbers a rank contributes for one oracle call)."""
    v = value.detach().reshape(()).to(device=device, dtype=torch.float64)
    return torch.stack([v * n, torch.tensor(float(n), dtype=torch.float64, device=device)])


def _pair_mean(pair: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The union-batch mean from an all-reduced pair, in the closure's dtype and device."""
    return (pair[0] / pair[1]).to(device=like.device, dtype=like.dtype)


def _flat_grads(params: Sequence[torch.Tensor]) -> dict[torch.dtype, torch.Tensor]:
    """Gradients flattened into one buffer per dtype, in parameter order (zeros where no grad)."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        groups.setdefault(g.dtype, []).append(g.reshape(-1))
    return {dt: torch.cat(gs) for dt, gs in groups.items()}


def _unflatten_grads(params: Sequence[torch.Tensor], flat: dict[torch.dtype, torch.Tensor]) -> None:
    offsets = {dt: 0 for dt in flat}
    for p in params:
        dt = p.grad.dtype if p.grad is not None else p.dtype
        k = offsets[dt]
        p.grad = flat[dt][k : k + p.numel()].view_as(p).clone()
        offsets[dt] = k + p.numel()


def _leaf_loss(value: torch.Tensor) -> torch.Tensor:
    """The returned loss: a leaf (the closure has set every ``p.grad`` itself, torch.optim's
    convention, which the first-order optimizers follow), so nothing can backpropagate into the model."""
    return value.detach().clone().requires_grad_(True)


class _Parallel:
    """What the training loop needs from a data-parallel context (see the two implementations)."""

    world_size: int = 1
    rank: int = 0

    def __init__(self) -> None:
        self.stats = CommStats()
        self._params: list[torch.Tensor] = []
        self._zero_order = True

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    def check_config(self, config) -> None:
        """``ValueError`` when the run cannot be split over ``world_size`` ranks."""
        if config.batch_size < self.world_size:
            raise ValueError(
                f"TrainConfig.batch_size ({config.batch_size}) must be >= the number of processes "
                f"({self.world_size}): every rank evaluates its own non-empty shard of the batch "
                f"(uneven shards are fine, they are weighted by size)"
            )

    def bind(self, params: Sequence[torch.Tensor], zero_order: bool,
             stats: dict[str, Any] | None = None) -> None:
        """The trainable tensors (first-order: whose gradients are all-reduced) and the method kind.
        Called once per run segment by the loop; the communication counters start from ``stats``
        (a resumed run's saved :meth:`CommStats.as_dict`: the counts accumulate over the segments),
        or from zero."""
        self.stats = CommStats.from_dict(stats)
        self._params = list(params)
        self._zero_order = bool(zero_order)

    def device_for(self, device: str) -> torch.device:
        from .models import resolve_device

        return resolve_device(device)

    def barrier(self) -> None:
        pass

    def check_replicas(self, named: Sequence[tuple[str, torch.Tensor]], step: int) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "kind": type(self).__name__, "communication": self.stats.as_dict()}


class DataParallel(_Parallel):
    """One rank of a ``torch.distributed`` process group (see the module doc).

    Build with :meth:`from_env` (initialises the default group from torchrun's variables when
    needed) or directly on an initialised group.
    """

    def __init__(self, *, local_rank: int = 0, device: torch.device | None = None) -> None:
        import torch.distributed as dist

        super().__init__()
        if not dist.is_initialized():
            raise ValueError("DataParallel needs an initialised torch.distributed process group "
                             "(use DataParallel.from_env() under torchrun)")
        self.dist = dist
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        self.local_rank = int(local_rank)
        self.backend = str(dist.get_backend())
        self.device = device if device is not None else torch.device("cpu")
        # nccl reduces CUDA tensors only; gloo's CPU path is the well-trodden one.
        self.comm_device = self.device if self.backend == "nccl" else torch.device("cpu")
        self.owns_group = False

    @classmethod
    def from_env(cls, device: str = "auto", *, timeout_s: float | None = None) -> "DataParallel":
        """This rank under torchrun: init the default group (``nccl`` for CUDA, ``gloo`` for CPU)."""
        import torch.distributed as dist

        env = torchrun_env()
        if env is None:
            raise ValueError("not under torchrun: WORLD_SIZE is not set (launch with torchrun or "
                             "`zotheory finetune --nproc N`)")
        dev = _rank_device(device, env)
        owns = False
        if not dist.is_initialized():
            if timeout_s is None:
                text = os.environ.get(TIMEOUT_ENV, "").strip()
                try:
                    timeout_s = float(text) if text else DEFAULT_TIMEOUT_S
                except ValueError:
                    raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
            if not timeout_s > 0:
                raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
            owns = True
        if dist.get_world_size() != env["world_size"] or dist.get_rank() != env["rank"]:
            raise ValueError("the initialised process group does not match WORLD_SIZE / RANK")
        self = cls(local_rank=env["local_rank"], device=dev)
        self.owns_group = owns
        return self

    def device_for(self, device: str) -> torch.device:
        dev = _rank_device(device, {"world_size": self.world_size, "local_rank": self.local_rank})
        if dev != self.device:
            raise ValueError(f"TrainConfig.device {device!r} resolves to {dev} on rank {self.rank}, "
                             f"but this process group was set up for {self.device}")
        return dev

    # -- collectives -------------------------------------------------------------------

    def _all_reduce(self, tensor: torch.Tensor, kind: str) -> torch.Tensor:
        t = tensor.to(self.comm_device)
        self.stats.add(kind, t)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.backend == "nccl":
            self.dist.barrier(device_ids=[self.device.index])
        else:
            self.dist.barrier()

    # -- the loop's hooks --------------------------------------------------------------

    def closure(self, make: LossFactory, batch: Sequence[Any]) -> Callable[[], torch.Tensor]:
        """The step's closure: the union-batch mean loss from this rank's shard (see the module doc)."""
        batch = list(batch)
        lo, hi = shard_bounds(len(batch), self.world_size, self.rank)
        if hi <= lo:
            raise ValueError(f"batch of {len(batch)} examples leaves rank {self.rank} of "
                             f"{self.world_size} without any (batch_size must be >= world size)")
        local = make(batch[lo:hi])
        n, total = hi - lo, len(batch)

        if self._zero_order:
            def zo_closure() -> torch.Tensor:
                value = local()
                return _pair_mean(self._all_reduce(_loss_pair(value, n, self.comm_device), "train"), value)

            return zo_closure

        params = self._params

        def fo_closure() -> torch.Tensor:
            with torch.enable_grad():
                value = local()
                (value * (n / total)).backward()  # this rank's share of the union-batch gradient
            reduced = {dt: self._all_reduce(flat, "train_gradients").to(flat.device)
                       for dt, flat in _flat_grads(params).items()}
            _unflatten_grads(params, reduced)
            pair = self._all_reduce(_loss_pair(value, n, self.comm_device), "train")
            return _leaf_loss(_pair_mean(pair, value))

        return fo_closure

    def evaluate(self, model, tok, examples: Sequence[Any], batch_size: int | None) -> dict[str, float]:
        """Accuracy / loss / n on ``examples``, each rank scoring its contiguous slice."""
        examples = list(examples)
        if not examples:
            raise ValueError("examples must not be empty")
        lo, hi = shard_bounds(len(examples), self.world_size, self.rank)
        sums = _eval_sums(model, tok, examples[lo:hi], batch_size, self.comm_device)
        return _eval_result(self._all_reduce(sums, "eval"))

    def check_replicas(self, named: Sequence[tuple[str, torch.Tensor]], step: int) -> None:
        """Raise ``RuntimeError`` unless every rank's trainable weights are bitwise identical."""
        digest = _weights_digest(named)
        mine = torch.frombuffer(bytearray(digest), dtype=torch.int64).to(self.comm_device)  # 4 x int64
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        self.stats.add("check", mine)
        self.dist.all_gather(gathered, mine)
        differ = [r for r, g in enumerate(gathered) if not torch.equal(g.cpu(), gathered[0].cpu())]
        if differ:
            raise RuntimeError(f"data-parallel replicas diverged at step {step}: the trainable weights of "
                               f"rank(s) {differ} differ from rank 0's")

    def close(self, *, sync: bool = False) -> None:
        """Destroy the default group if :meth:`from_env` created it.

        ``sync=True`` (the end of a run that finished on every rank) first waits at a barrier, so
        that no rank tears down its ``gloo`` connections while a peer still finishes its last
        collective: without it, about 1 clean 2-process run in 12 ended with a rank killed by
        SIGABRT ("terminate called without an active exception") after the results were written.
        After an error the barrier is skipped (a peer may never arrive).
        """
        if self.owns_group and self.dist.is_initialized():
            if sync:
                self.barrier()
            self.dist.destroy_process_group()
        self.owns_group = False


class SimulatedDataParallel(_Parallel):
    """``world_size`` ranks run one after the other in one process: the single-process reference.

    The shards, the per-shard forward passes and the float64 combination (in rank order) are
    those of :class:`DataParallel`, so a 2-rank run equals this one bitwise (see the module doc).
    No process group, no communication (the counters count what would be sent by one rank).
    """

    def __init__(self, world_size: int) -> None:
        super().__init__()
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
        self.world_size = world_size

    def _shards(self, items: Sequence[Any]) -> list[list[Any]]:
        items = list(items)
        return [items[lo:hi] for lo, hi in (shard_bounds(len(items), self.world_size, r)
                                            for r in range(self.world_size))]

    def closure(self, make: LossFactory, batch: Sequence[Any]) -> Callable[[], torch.Tensor]:
        shards = self._shards(batch)
        if any(not s for s in shards):
            raise ValueError(f"batch of {len(batch)} examples leaves a rank of {self.world_size} without any "
                             f"(batch_size must be >= world size)")
        locals_ = [make(s) for s in shards]
        total = len(batch)

        def combine(values: list[torch.Tensor]) -> torch.Tensor:
            pairs = [_loss_pair(v, len(s), v.device) for v, s in zip(values, shards)]
            self.stats.add("train", pairs[0])  # what one rank would send
            acc = pairs[0]
            for pair in pairs[1:]:  # rank order, as the all-reduce of two operands: a + b
                acc = acc + pair
            return _pair_mean(acc, values[0])

        if self._zero_order:
            return lambda: combine([f() for f in locals_])

        params = self._params

        def fo_closure() -> torch.Tensor:
            values = []
            with torch.enable_grad():
                for f, s in zip(locals_, shards):
                    v = f()
                    (v * (len(s) / total)).backward()  # accumulates: grad_0 + grad_1 + ... in rank order
                    values.append(v)
            for p in params:  # the rank that got no gradient contributes zeros, as in DataParallel
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            for flat in _flat_grads(params).values():
                self.stats.add("train_gradients", flat)
            return _leaf_loss(combine(values))

        return fo_closure

    def evaluate(self, model, tok, examples: Sequence[Any], batch_size: int | None) -> dict[str, float]:
        examples = list(examples)
        if not examples:
            raise ValueError("examples must not be empty")
        device = next(model.parameters()).device
        acc = None
        for shard in self._shards(examples):
            sums = _eval_sums(model, tok, shard, batch_size, device)
            acc = sums if acc is None else acc + sums
        return _eval_result(acc)


def _weights_digest(named: Sequence[tuple[str, torch.Tensor]]) -> bytes:
    h = hashlib.sha256()
    for name, p in named:
        h.update(name.encode())
        t = p.detach().to("cpu").contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.digest()


def _rank_device(device: str, env: dict[str, int]) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` on a CUDA machine, else CPU."""
    if device == "cpu":
        return torch.device("cpu")
    if device in ("auto", "cuda"):
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            if env["local_rank"] >= n:
                raise ValueError(f"LOCAL_RANK {env['local_rank']} has no GPU: this machine has {n}; "
                                 f"launch at most {n} processes per node")
            return torch.device("cuda", env["local_rank"])
        if device == "cuda":
            raise ValueError("TrainConfig.device is 'cuda' but CUDA is not available")
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda:"):
        if env["world_size"] > 1:
            raise ValueError(f"TrainConfig.device {device!r} names one GPU, but under torchrun each of the "
                             f"{env['world_size']} ranks uses cuda:LOCAL_RANK: pass --device cuda or auto")
        return torch.device(device)
    raise ValueError(f"TrainConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def from_env(device: str = "auto", *, timeout_s: float | None = None) -> DataParallel | None:
    """:meth:`DataParallel.from_env` under torchrun (``WORLD_SIZE`` set), else ``None`` (one process)."""
    if torchrun_env() is None:
        return None
    return DataParallel.from_env(device, timeout_s=timeout_s)


def shutdown(parallel: Any, *, sync: bool = False) -> None:
    """Close ``parallel``'s process group if it created it (no-op for ``None`` / the simulation);
    ``sync=True`` after a run that succeeded on this rank (see :meth:`DataParallel.close`)."""
    close = getattr(parallel, "close", None)
    if callable(close):
        close(sync=sync)


# --------------------------------------------------------------------------- the launcher


def argv_from_namespace(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        skip: Sequence[str] = ()) -> list[str]:
    """The command-line options that reproduce ``args`` for ``parser`` (options only, ``skip`` left out)."""
    out: list[str] = []
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of actions
        if not action.option_strings or action.dest in set(skip) or action.dest == "help":
            continue
        if action.default is argparse.SUPPRESS:
            continue
        flag = max(action.option_strings, key=len)
        value = getattr(args, action.dest, None)
        if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
            if value:
                out.append(flag)
        elif isinstance(action, argparse._AppendAction):  # noqa: SLF001
            for item in value or []:
                out += [flag, str(item)]
        elif value is None:
            continue
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def launch_command(argv: Sequence[str], nproc: int, *, module: str = "zotheory") -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ARGV...``."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be an integer >= 1, got {nproc!r}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *argv]


def launch(argv: Sequence[str], nproc: int, *, module: str = "zotheory") -> int:
    """Run :func:`launch_command` as a subprocess (same environment and working directory);
    its exit status (non-zero when any rank failed: torchrun stops the others)."""
    if torchrun_env() is not None:
        raise ValueError("--nproc launches torchrun itself; this process already runs under torchrun "
                         "(WORLD_SIZE is set)")
    return subprocess.call(launch_command(argv, nproc, module=module))
