"""Reliability: nothing lost on a crash, clear errors on bad input, reproducible to the bit.

What this file adds to the per-module tests (docs/reliability.md maps every guarantee to
its tests): SIGKILL of a synthetic sweep at several points and of a fine-tuning job,
each restarted and compared with an uninterrupted run; 10,000 perturb/restore cycles in
bf16/fp16/fp32; same seed -> identical result files; the Muon shells on non-matrix
parameters; out-of-memory on model load; configuration and file errors that name the key
or the path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bitwise import bits
from zotheory import integrity
from zotheory.estimators import gaussian_two_point, jaguar_coordinates
from zotheory.orthogonalize import orthogonalize
from zotheory.synthetic.runner import RunSpec
from zotheory.synthetic.sweep import run_specs

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
def _kill_hook(name_env: str = "ZOT_KILL_NAME", count_env: str = "ZOT_KILL_AT") -> str:
    """Source installing an ``os.replace`` wrapper that SIGKILLs its own process on the N-th
    rename onto a file called $ZOT_KILL_NAME (or ending with it): the temporary file is
    complete and fsync'ed but not yet renamed -- the worst moment for a writer to die."""
    return textwrap.dedent(f"""
        import os, signal
        _name, _at = os.environ.get("{name_env}"), int(os.environ.get("{count_env}", "0"))
        if _at:
            _real, _seen = os.replace, [0]
            def _replace(src, dst, *a, **k):
                if str(dst).endswith(_name):
                    _seen[0] += 1
                    if _seen[0] == _at:
                        os.kill(os.getpid(), signal.SIGKILL)
                return _real(src, dst, *a, **k)
            os.replace = _replace
    """)


def _wait_then_kill(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or it exits by itself)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# =========================================================================== crash safety: sweep

# The sweep's specs and the toy task are source text shared by this module and the subprocesses
# (which then import neither pytest nor this file).
_SPECS_SRC = textwrap.dedent("""
    from zotheory.synthetic.runner import RunSpec
    VEC = {"family": "separable_cosine", "d": 6, "a": 1.0, "b": 0.5, "w": 2.0, "x0_scale": 1.5}

    def sweep_specs():
        # 4 groups (one per problem seed) of 2 runs: 8 files, written two by two.
        return [RunSpec("kill", {**VEC, "seed": g}, "jaguar_signsgd", {"gamma": 0.01, "beta": 0.9, "tau": 1e-4},
                        700, s, {"sigma": 0.5, "Delta": 0.0, "delta_mode": "none"})
                for g in range(4) for s in range(2)]
""")
exec(_SPECS_SRC)
VEC, sweep_specs = globals()["VEC"], globals()["sweep_specs"]

_SWEEP_SCRIPT = _kill_hook() + _SPECS_SRC + textwrap.dedent("""
    import sys
    from zotheory.synthetic.sweep import run_specs
    run_specs(sweep_specs(), sys.argv[1], progress=False)
""")


def _sweep_proc(root: Path, kill_at: int = 0) -> subprocess.Popen:
    env = {**ENV, "ZOT_KILL_NAME": ".parquet", "ZOT_KILL_AT": str(kill_at)}
    return subprocess.Popen([sys.executable, "-c", _SWEEP_SCRIPT, str(root)], env=env)


def _results(root: Path) -> dict[str, pd.DataFrame]:
    volatile = ["wall_time_s", "git_sha"]
    return {p.name: pd.read_parquet(p).drop(columns=volatile) for p in sorted(root.rglob("*.parquet"))}


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_sweep_killed_at_several_points_resumes_to_identical_results(tmp_path):
    specs = sweep_specs()
    n = len(specs)
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_specs(specs, full, progress=False)["written"] == n
    reference = _results(full)
    assert len(reference) == n

    def check_partial(expect_tmp: bool) -> int:
        files = _files(killed)
        assert len(files) < n, "the sweep finished before it was killed; make the test sweep longer"
        for p in files:  # whatever exists is complete and already equals the final result
            got = pd.read_parquet(p).drop(columns=["wall_time_s", "git_sha"])
            pd.testing.assert_frame_equal(got, reference[p.name], check_exact=True)
        if expect_tmp:
            assert list(killed.rglob(".*.tmp")), "the kill inside a write should leave its temporary file"
        return len(files)

    # 1. killed inside the write of the 2nd file (temporary written and fsync'ed, not renamed):
    #    1 file exists, its group-mate does not.
    proc = _sweep_proc(killed, kill_at=2)
    assert proc.wait(timeout=300) == -signal.SIGKILL
    counts = [check_partial(expect_tmp=True)]
    assert counts[0] == 1

    # 2. and 3. killed from outside once at least 3, then 5 files exist (the restarted sweep
    #    first removes the stale temporary and re-runs the half-written group).
    for target in (3, 5):
        proc = _sweep_proc(killed)
        _wait_then_kill(proc, lambda: len(_files(killed)) >= target)
        counts.append(check_partial(expect_tmp=False))
        assert counts[-1] >= target
    assert counts == sorted(counts)

    # 4. a last restart finishes: only the missing runs are computed and written.
    before = sum(integrity.problem(p) is None for p in _files(killed))  # a file without its checksum is redone
    summary = run_specs(specs, killed, progress=False)
    assert summary["written"] == n - before and summary["skipped"] == before
    resumed = _results(killed)
    assert sorted(resumed) == sorted(reference) == sorted(f"{s.run_id}.parquet" for s in specs)
    for name in reference:
        pd.testing.assert_frame_equal(resumed[name], reference[name], check_exact=True)
    assert not list(killed.rglob("*.tmp")), "a temporary file was left behind"
    # a further restart has nothing to do
    assert run_specs(specs, killed, progress=False)["written"] == 0


def test_same_config_gives_identical_result_files(tmp_path):
    specs = [RunSpec("det", {**VEC, "seed": 7}, algo, hp, 200, s, {"sigma": 0.3, "Delta": 0.0, "delta_mode": "none"})
             for s in range(2)
             for algo, hp in (("jaguar_signsgd", {"gamma": 0.01, "beta": 0.9, "tau": 1e-4}),
                              ("zo_sgd", {"gamma": 0.01, "tau": 1e-4}))]
    a, b = tmp_path / "a", tmp_path / "b"
    run_specs(specs, a, progress=False)
    run_specs(list(reversed(specs)), b, progress=False)  # the order of the specs does not matter
    ra, rb = _results(a), _results(b)
    assert sorted(ra) == sorted(rb) and len(ra) == 4
    for name in ra:
        pd.testing.assert_frame_equal(ra[name], rb[name], check_exact=True)


# =========================================================================== crash safety: fine-tuning

# zotheory.llm imports transformers / peft lazily; the tests that build models need them.
needs_llm = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("peft") is None,
    reason="needs transformers and peft",
)

from zotheory.llm import models as models_mod  # noqa: E402
from zotheory import optim  # noqa: E402
from zotheory.llm import train as train_mod  # noqa: E402
from zotheory.llm.train import TrainConfig, train  # noqa: E402


# the fine-tuning subprocesses below import the tests' shared toy task (tests/examples.py)
_TOY_SRC = f"import sys\nimport torch\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\nfrom examples import ToyTask\n"
from examples import ToyTask  # noqa: E402


def _ft_config(out_dir, **kw) -> TrainConfig:
    # JAGUAR SignSGD (momentum, step counter, generator), full fine-tuning, a decaying lr
    # (the step index matters), 10 training examples in batches of 4 (resumes fall mid-epoch),
    # dev evaluations (best-dev weights) and a checkpoint after every step.
    base = dict(task="toy", model="tiny-opt", method="jaguar_signsgd", steps=50, out_dir=str(out_dir),
                batch_size=4, train_examples=10, eval_every=5, eval_examples=8, device="cpu", progress=False,
                lr=1e-2, optim={"coords_per_step": 2, "beta": 0.5}, lr_schedule="power", checkpoint_every=1)
    base.update(kw)
    return TrainConfig(**base)


_TRAIN_SCRIPT = _kill_hook() + _TOY_SRC + textwrap.dedent("""
    import json, sys
    torch.set_num_threads(1)
    from zotheory.llm.train import TrainConfig, train
    train(TrainConfig.from_dict(json.loads(sys.argv[1])), task=ToyTask())
""")


def _train_proc(config: TrainConfig, kill_at: int = 0) -> subprocess.Popen:
    env = {**ENV, "ZOT_KILL_NAME": train_mod.CHECKPOINT, "ZOT_KILL_AT": str(kill_at)}
    return subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, json.dumps(config.to_dict())], env=env)


def _ckpt(out: Path) -> dict:
    return torch.load(out / train_mod.CHECKPOINT, map_location="cpu", weights_only=True)


def _ckpt_step(out: Path) -> int:
    try:
        return int(_ckpt(out)["step"])
    except (FileNotFoundError, RuntimeError, EOFError):  # not there yet
        return -1


TIMING_LOG = ["wall_time", "step_time", "peak_memory_mb"]
RESULT_VOLATILE = {"train_wall_time", "total_wall_time", "peak_memory_mb", "config"}


def _assert_same_outputs(a: Path, b: Path) -> None:
    """Everything but wall-clock time, memory and out_dir/resume is bitwise equal."""
    for name, drop in (("log.parquet", TIMING_LOG), ("evals.parquet", ["wall_time"])):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name).drop(columns=drop),
                                      pd.read_parquet(b / name).drop(columns=drop), check_exact=True)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert set(ra) == set(rb)
    for key in set(ra) - RESULT_VOLATILE:
        assert ra[key] == rb[key], key
    ca, cb = ({k: v for k, v in r["config"].items() if k not in ("out_dir", "resume")} for r in (ra, rb))
    assert ca == cb
    sa, sb = _ckpt(a), _ckpt(b)
    assert sa["step"] == sb["step"]
    assert sa["trainable"].keys() == sb["trainable"].keys()
    for n in sa["trainable"]:
        assert torch.equal(sa["trainable"][n], sb["trainable"][n]), n
    for n in sa["best"]["weights"]:
        assert torch.equal(sa["best"]["weights"][n], sb["best"]["weights"][n]), n
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert torch.equal(oa["generator"], ob["generator"])
    assert (oa["steps"], oa["oracle_calls"]) == (ob["steps"], ob["oracle_calls"])
    for xa, xb in zip(oa["state"].values(), ob["state"].values(), strict=True):
        for k, v in xa.items():
            assert torch.equal(v, xb[k]) if isinstance(v, torch.Tensor) else v == xb[k], k
    assert torch.equal(sa["data"]["generator"], sb["data"]["generator"])
    assert (sa["data"]["perm"], sa["data"]["pos"]) == (sb["data"]["perm"], sb["data"]["pos"])
    # sa["rng"] / sb["rng"] (torch's and Python's global generators) are saved and restored, but
    # the trajectory draws nothing from them: they hold whatever the process did before, so
    # they differ between this process and a subprocess.


@needs_llm
def test_fine_tuning_killed_twice_resumes_bitwise(tmp_path):
    full = train(_ft_config(tmp_path / "full"), task=ToyTask())
    cfg = _ft_config(tmp_path / "killed")
    out = Path(cfg.out_dir)

    # 1. killed inside the 8th checkpoint write: checkpoint 7 stays, the temporary is left behind.
    assert _train_proc(cfg, kill_at=8).wait(timeout=300) == -signal.SIGKILL
    assert _ckpt_step(out) == 7
    assert list(out.glob(".checkpoint.pt.*.tmp"))  # zotheory.integrity's per-process temporary
    assert not (out / "result.json").exists()

    # 2. restarted with resume=True, killed from outside mid-run.
    resumed = dataclasses.replace(cfg, resume=True)
    proc = _train_proc(resumed)
    _wait_then_kill(proc, lambda: _ckpt_step(out) >= 15)
    step = _ckpt_step(out)
    assert 15 <= step < cfg.steps, "the run finished before it was killed; make it longer"

    # 3. resumed to the end: bitwise the uninterrupted run; no temporary file left.
    train(resumed, task=ToyTask())
    _assert_same_outputs(full, out)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


class _Crash(BaseException):
    """Stands in for the process dying (not an Exception: nothing catches it)."""


@needs_llm
def test_crash_while_writing_final_outputs_resumes_to_the_same_result(tmp_path, monkeypatch):
    kw = dict(steps=6, eval_every=2)
    full = train(_ft_config(tmp_path / "full", **kw), task=ToyTask())
    cfg = _ft_config(tmp_path / "crash", **kw)
    real = train_mod.write_checked  # every output goes through zotheory.integrity.write_checked

    def crashing(path, write, **kw):
        if Path(path).name == "result.json":  # the final checkpoint and log are on disk already
            raise _Crash()
        return real(path, write, **kw)

    monkeypatch.setattr(train_mod, "write_checked", crashing)
    with pytest.raises(_Crash):
        train(cfg, task=ToyTask())
    monkeypatch.setattr(train_mod, "write_checked", real)
    assert _ckpt_step(Path(cfg.out_dir)) == 6 and not (Path(cfg.out_dir) / "result.json").exists()
    train(dataclasses.replace(cfg, resume=True), task=ToyTask())
    _assert_same_outputs(full, Path(cfg.out_dir))


@needs_llm
def test_same_seed_and_config_give_identical_fine_tuning_outputs(tmp_path):
    kw = dict(steps=5, eval_every=2, checkpoint_every=None, method="zo_adamm", optim={}, lora=True,
              model="tiny-llama")
    a = train(_ft_config(tmp_path / "a", **kw), task=ToyTask())
    b = train(_ft_config(tmp_path / "b", **kw), task=ToyTask())
    _assert_same_outputs(a, b)
    c = train(_ft_config(tmp_path / "c", seed=1, **kw), task=ToyTask())
    la, lc = (pd.read_parquet(d / "log.parquet")["loss"] for d in (a, c))
    assert not la.equals(lc)  # the seed matters


@needs_llm
def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    cfg = _ft_config(tmp_path / "run", steps=3, checkpoint_every=1)
    out = train(cfg, task=ToyTask(), stop_after=2)
    ckpt = out / train_mod.CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated: its SHA-256 no longer matches (issue 18)
    from zotheory.integrity import CorruptFile, write_checked

    with pytest.raises(CorruptFile, match=r"corrupt file .*checkpoint\.pt \(SHA-256"):
        train(dataclasses.replace(cfg, resume=True), task=ToyTask())

    write_checked(ckpt, lambda p: p.write_bytes(data[: len(data) // 2]))  # intact bytes of a truncated file
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*checkpoint\.pt"):
        train(dataclasses.replace(cfg, resume=True), task=ToyTask())
    write_checked(ckpt, lambda p: torch.save({"something": "else"}, p))
    with pytest.raises(ValueError, match=r"checkpoint\.pt is not a zotheory training checkpoint"):
        train(dataclasses.replace(cfg, resume=True), task=ToyTask())


# =========================================================================== numerical guards


def test_10000_perturb_restore_cycles_are_bitwise():
    """jaguar_coordinates and gaussian_two_point (restore="saved") on bf16, fp16 and fp32 tensors:
    after 10,000 perturb/restore cycles every bit is as before (signed zeros, subnormals and
    values where +-tau rounds away included)."""
    g = torch.Generator().manual_seed(0)
    params = []
    for dt, tiny, big in ((torch.bfloat16, 1e-40, 1e30), (torch.float16, 6e-8, 6e4), (torch.float32, 1e-45, 1e30)):
        p = (torch.randn(5, 4, generator=g) * 3).to(dt)
        flat = p.view(-1)
        flat[0], flat[1], flat[2], flat[3] = -0.0, tiny, -big, 0.1
        params.append(p)
    before = [bits(p) for p in params]
    moved = [0]

    def closure():
        if any(not torch.equal(bits(p), b) for p, b in zip(params, before)):
            moved[0] += 1
        return sum(p.float().clamp(-1e3, 1e3).sum() for p in params)

    cycles = 10_000
    for i in range(cycles // 2):
        jaguar_coordinates(params, closure, 1e-2, k=2, generator=g)
        gaussian_two_point(params, closure, 1e-2, seed=i)
    assert moved[0] >= 0.8 * 3 * cycles  # 6 closure calls per pair of estimates saw perturbed values
    for p, b in zip(params, before):
        assert torch.equal(bits(p), b), p.dtype


def test_regenerate_restore_is_the_named_exception():
    """MeZO's copy-free walk drifts in low precision (documented; never the default)."""
    x = (torch.randn(6, 5, generator=torch.Generator().manual_seed(1))).to(torch.bfloat16)
    y = x.clone()
    for i in range(200):
        gaussian_two_point(y, lambda: y.float().square().sum(), 1e-2, seed=i, restore="regenerate")
    assert not torch.equal(bits(x), bits(y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["ns3", "ns5", "exact"])
def test_orthogonalize_finite_on_degenerate_low_precision_input(method, dtype):
    cases = [torch.zeros(4, 3), torch.full((2, 2), -0.0), torch.outer(torch.arange(1.0, 5.0), torch.ones(3)),
             torch.full((4, 3), 6e4), torch.full((4, 3), 1e-7), torch.ones(5, 1)]
    for A in cases:
        Q = orthogonalize(A.to(dtype), method)
        assert Q.dtype == dtype and torch.isfinite(Q).all()
        if not A.any():
            assert not Q.any()  # a zero matrix maps to zero


# =========================================================================== Muon on non-matrix parameters


def _mixed_params(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (5,), (), (2, 2, 3)]  # matrix, vector (bias / norm), scalar, rank 3
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def _loss(params):
    return sum((p.float() ** 2).sum() + p.float().sin().sum() for p in params)


@pytest.mark.parametrize("method", ["jaguar_muon", "zo_muon"])
@pytest.mark.parametrize("non_matrix", ["sign", "column"])
def test_muon_shells_on_non_matrix_parameters_follow_the_rule(method, non_matrix):
    params = _mixed_params()
    hp = {"coords_per_step": 3} if method == "jaguar_muon" else {}
    opt = optim.make_optimizer(method, params, lr=0.01, tau=1e-2, non_matrix=non_matrix, seed=4, **hp)
    kinds = ["matrix" if type(s).__name__ in ("JaguarMuonState", "ZOMuonState") and p.ndim == 2 else
             "column" if type(s).__name__ in ("JaguarMuonState", "ZOMuonState") else "sign"
             for s, p in zip(opt.kernel_states, params)]
    assert kinds == ["matrix", non_matrix, non_matrix, non_matrix]
    for _ in range(5):
        before = [p.detach().clone() for p in params]
        opt.step(lambda: _loss(params))
        for p, b in zip(params, before):
            assert torch.isfinite(p).all()
            if p.ndim == 2:
                continue
            step = (b - p.detach()).reshape(-1).double()
            if non_matrix == "sign":  # sign update: every entry moves by 0 or +-lr
                assert torch.all(torch.isclose(step.abs(), torch.tensor(0.01, dtype=torch.float64), atol=1e-6)
                                 | (step == 0))
            elif step.any():  # column rule: a vector v moves by lr * v/||v|| (rank 3 per row block)
                col = step.reshape(p.shape[0], -1) if p.ndim > 1 else step.reshape(-1, 1)
                assert torch.allclose(torch.linalg.matrix_norm(col, ord=2), torch.tensor(0.01, dtype=torch.float64),
                                      rtol=2e-2)


def test_jaguar_muon_tensors_without_sampled_coordinates_do_not_move():
    """k = 1: the other tensors' momenta are exactly zero; NS(0) = 0 and sign(0) = 0 -- no move, no nan."""
    params = _mixed_params()
    opt = optim.make_optimizer("jaguar_muon", params, lr=0.01, tau=1e-2, coords_per_step=1, seed=0)
    before = [p.detach().clone() for p in params]
    opt.step(lambda: _loss(params))
    changed = [not torch.equal(p, b) for p, b in zip(params, before)]
    assert sum(changed) == 1 and all(torch.isfinite(p).all() for p in params)


# =========================================================================== out of memory on load


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    model, tok = models_mod.tiny_model("llama", seed=0)
    path = tmp_path_factory.mktemp("tiny-llama-local")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@needs_llm
def test_model_size_estimate_from_safetensors_headers(local_model):
    from safetensors.torch import load_file

    numel = sum(t.numel() for f in local_model.glob("*.safetensors") for t in load_file(f).values())
    assert models_mod.estimate_model_bytes(local_model, "float32") == 4 * numel
    assert models_mod.estimate_model_bytes(local_model, "bf16") == 2 * numel
    avail = models_mod.available_memory_bytes("cpu")
    assert avail is None or avail > 0


@needs_llm
def test_model_too_large_for_memory_says_the_size(local_model, monkeypatch):
    monkeypatch.setattr(models_mod, "available_memory_bytes", lambda device="cpu": 1000)
    with pytest.raises(MemoryError, match=r"needs about \d+\.\d KiB \([\d,]+ bytes\) for its weights in float32; 1000 bytes available on cpu"):
        models_mod.load_model(str(local_model))
    with pytest.raises(models_mod.ModelTooLargeError, match="bfloat16"):
        models_mod.load_model(str(local_model), dtype="bf16")
    monkeypatch.setattr(models_mod, "available_memory_bytes", lambda device="cpu": None)  # unknown: try
    model, _ = models_mod.load_model(str(local_model))
    assert next(model.parameters()).dtype == torch.float32


@needs_llm
def test_allocator_failure_during_load_is_reported_with_the_size(local_model, monkeypatch):
    monkeypatch.setattr(models_mod, "available_memory_bytes", lambda device="cpu": 2**40)

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 262144 bytes.")

    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", oom)
    with pytest.raises(models_mod.ModelTooLargeError, match=r"needs about .*KiB.*1024\.00 GiB available.*"
                                                            r"DefaultCPUAllocator"):
        models_mod.load_model(str(local_model))

    def other(*a, **k):
        raise RuntimeError("some unrelated failure")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", other)
    with pytest.raises(RuntimeError, match="unrelated") as info:
        models_mod.load_model(str(local_model))
    assert not isinstance(info.value, MemoryError)


def test_malformed_safetensors_header_names_the_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{")
    with pytest.raises(ValueError, match=r"malformed safetensors header in .*model\.safetensors"):
        models_mod.estimate_model_bytes(tmp_path)
    assert models_mod.estimate_model_bytes(tmp_path / "nothing-here") is None


# =========================================================================== bad input


def _spec(**kw) -> RunSpec:
    base = dict(experiment="x", problem={**VEC, "seed": 0}, algorithm="jaguar_signsgd",
                hyper={"gamma": 0.01, "beta": 0.9, "tau": 1e-4}, T=10, seed=0)
    base.update(kw)
    return RunSpec(**base)


@pytest.mark.parametrize("kw, pattern", [
    ({"hyper": {"gama": 0.01, "gamma": 0.1}}, r"RunSpec.hyper \(jaguar_signsgd\) has unknown key\(s\) \['gama'\]; "
                                              r"valid: \[.*'beta'.*'gamma'"),
    ({"hyper": {"beta": 0.9}}, r"RunSpec.hyper needs 'gamma'"),
    ({"hyper": {"gamma": "0.1"}}, r"RunSpec.hyper\['gamma'\] must be a finite real number, got '0.1'"),
    ({"hyper": {"gamma": math.nan}}, r"RunSpec.hyper\['gamma'\] must be a finite"),
    ({"hyper": {"gamma": True}}, r"RunSpec.hyper\['gamma'\]"),
    ({"noise": {"sigma": 1.0, "sigmaa": 1.0}}, r"RunSpec.noise has unknown key\(s\) \['sigmaa'\]; valid: \["),
    ({"noise": {"sigma": "big"}}, r"RunSpec.noise\['sigma'\]"),
    ({"problem": {**VEC, "dd": 3}}, r"RunSpec.problem \(separable_cosine\) has unknown key\(s\) \['dd'\]"),
    ({"problem": {"family": "nope"}}, r"RunSpec.problem\['family'\] must be one of \['cauchy_regression'"),
    ({"algorithm": "jaguar"}, r"RunSpec.algorithm must be one of \['acc_zom'.*'zo_signsgd'\], got 'jaguar'"),
    ({"T": 0}, r"RunSpec.T must be an integer >= 1, got 0"),
    ({"T": 10.0}, r"RunSpec.T must be an integer"),
    ({"seed": -1}, r"RunSpec.seed must be an integer >= 0"),
    ({"experiment": ""}, r"RunSpec.experiment"),
    ({"labels": None}, r"RunSpec.labels must be a dict"),
])
def test_run_spec_errors_name_the_key(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _spec(**kw)


def test_range_errors_stop_the_sweep_before_the_group_is_written(tmp_path):
    bad = _spec(hyper={"gamma": 0.01, "beta": 1.5, "tau": 1e-4})
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        run_specs([bad], tmp_path, progress=False)
    assert not _files(tmp_path)


def test_unknown_names_list_the_valid_ones():
    from zotheory.algorithms import get_algorithm
    from zotheory.llm.tasks import get_task
    from zotheory.synthetic.experiments import build
    from zotheory.synthetic.registry import make_problem

    cases = [
        (lambda: get_algorithm("jaguarr"), r"unknown algorithm 'jaguarr'; valid: \['acc_zom'"),
        (lambda: make_problem({"family": "quadratik"}), r"unknown problem family 'quadratik'; valid: \["),
        (lambda: build("medium"), r"preset must be one of \['smoke', 'quick', 'full'\]"),
        (lambda: build("smoke", ["t_swep"]), r"unknown experiment\(s\) \['t_swep'\]; valid: \["),
        (lambda: get_task("sst9"), r"name must be one of \[.*'sentiment'.*\], got 'sst9'"),
        (lambda: optim.make_optimizer("sgd", [torch.zeros(2, requires_grad=True)], lr=0.1),
         r"method must be one of \['acc_zom', 'adam'.*\], got 'sgd'"),
        (lambda: models_mod.parse_dtype("int8"), r"dtype must be one of \["),
        (lambda: TrainConfig(task="t", model="m", method="mezo", steps=1, out_dir="o"),
         r"TrainConfig.method must be one of \['acc_zom', 'adam'"),
    ]
    if importlib.util.find_spec("transformers") is not None:
        cases.append((lambda: models_mod.tiny_model("gpt9"), r"arch must be one of \['llama', 'opt', 'roberta'\]"))
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


def test_damaged_result_file_is_reported_with_its_path(tmp_path):
    from zotheory.synthetic.results import load_results

    d = tmp_path / "exp"
    d.mkdir()
    pd.DataFrame({"a": range(50)}).to_parquet(d / "run.parquet")
    data = (d / "run.parquet").read_bytes()
    (d / "run.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match=r"run\.parquet"):
        load_results(tmp_path)


def test_every_test_named_in_docs_reliability_md_exists():
    """docs/reliability.md maps each guarantee to its tests (``file.py::test`` and ``::test`` for
    the same file as the name before it): a renamed or deleted test must not leave it naming one."""
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs" / "reliability.md").read_text()
    current, named = None, []
    for m in re.finditer(r"`(?:(test_\w+\.py))?::(test_\w+)`", text):
        current = m.group(1) or current
        assert current is not None, m.group(0)
        named.append((current, m.group(2)))
    assert len(named) > 60
    missing = [f"{f}::{t}" for f, t in named
               if not re.search(rf"^def {t}\(", (repo / "tests" / f).read_text(), re.M)]
    assert missing == []
