"""The LLM benchmarks (zotheory.benchmarks.llm_step / memory) and the fast paths they measured.

* The MeZO-faithful anchor step regenerates ``z`` bitwise as our shells do (same seed, same
  stream) and gives the same update as ``zo_sgd``: **bitwise** with ``restore="regenerate"``
  (the same ``+1, -2, +1`` walk, the same float32 arithmetic), and within a stated
  tolerance with the default ``restore="saved"`` (the walk does not return ``x`` exactly, so
  ``f(x - tau z)`` is taken at a point a few ulps away).
* ``llm_step.run(quick=True)`` returns the documented columns with positive finite values;
  the memory worker returns a positive RSS for a tiny OPT config. No timing is asserted.
* The optimisations the benchmarks motivated are exact: CPU Gaussian draws in pieces equal
  the whole draw; the estimators' piecewise / in-place moves equal the per-tensor ones; the
  Gaussian shells' piecewise update, the JAGUAR sparse sign move and the sort-based splits
  equal the plain paths, bit for bit.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from bitwise import bits, same_bits  # noqa: E402
import zotheory.directions as directions  # noqa: E402
from zotheory import estimators  # noqa: E402
from zotheory.algorithms import _lists  # noqa: E402
from zotheory.algorithms._zo_common import draw_seed  # noqa: E402
from zotheory.benchmarks import llm_step, memory  # noqa: E402
from zotheory.estimates import CoordinateEstimate, split_coordinates  # noqa: E402
from zotheory import optim  # noqa: E402
from zotheory.llm.models import named_trainable_parameters  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

def peek_seed(opt) -> int:
    g = torch.Generator()
    g.set_state(opt.generator.get_state())
    return draw_seed(g)


# --------------------------------------------------------------------------- MeZO anchor


def test_mezo_regenerates_the_same_z_as_our_directions():
    params = [torch.zeros(3, 5), torch.zeros(7), torch.zeros(2, 2)]
    seed = 123456789
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # MeZO's zo_perturb_parameters / zo_update draw
        mezo = [torch.normal(mean=0, std=1, size=p.size(), device=p.device, dtype=p.dtype) for p in params]
    ours = directions.generate_directions(params, seed, "gaussian")
    assert all(same_bits(a, b) for a, b in zip(mezo, ours))


def _mezo_vs_shell(restore: str, dtype: torch.dtype):
    model = llm_step.build_llama(True, dtype=dtype)
    closure_data = llm_step.make_batch(model.config.vocab_size, 4, 8)
    twin = copy.deepcopy(model)
    named = named_trainable_parameters(model)
    before = [p.detach().clone() for _, p in named]
    opt = optim.make_optimizer("zo_sgd", [p for _, p in named], lr=1e-3, tau=1e-3, restore=restore, seed=7)
    seed = peek_seed(opt)
    opt.step(llm_step.make_closure(model, closure_data))
    twin_named = named_trainable_parameters(twin)
    with torch.random.fork_rng(devices=[]):
        llm_step.mezo_step(twin_named, llm_step.make_closure(twin, closure_data), lr=1e-3, eps=1e-3, seed=seed)
    ours = [p.detach() for _, p in named]
    theirs = [p.detach() for _, p in twin_named]
    return before, ours, theirs


def test_mezo_anchor_equals_zo_sgd_regenerate_bitwise():
    # Same walk (+tau z, -2 tau z, +tau z: the factors 1, 2 are exact), same float32 g, same update.
    _, ours, theirs = _mezo_vs_shell("regenerate", torch.float32)
    assert all(same_bits(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-5), (torch.float32, 1e-3)])
def test_mezo_anchor_equals_zo_sgd_saved_to_tolerance(dtype, rtol):
    # restore="saved" evaluates f(x - tau z) at fl(x - tau z), MeZO at fl(fl(x + tau z) - 2 tau z)
    # and returns x only up to rounding. The loss is float32 (as zotheory.llm.scoring makes it),
    # so g = (f+ - f-) / (2 tau) moves by ~ulp(f) / (2 tau) when f- does: the updates agree to
    # `rtol` (relative, max norm; measured 7e-8 in float64 and 2e-5 in float32).
    before, ours, theirs = _mezo_vs_shell("saved", dtype)
    num = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    den = max(float((a - x).abs().max()) for a, x in zip(ours, before))
    assert den > 0
    assert num <= rtol * den


# --------------------------------------------------------------------------- benchmarks run


def test_llm_step_quick_returns_positive_finite_columns():
    cases = [c for c in llm_step.CASES if (c[0], c[1]) in {("jaguar_signsgd", "k=1"), ("zo_sgd", "saved")}]
    df = llm_step.run(quick=True, progress=False, cases=cases, reps=1, warmup=0)
    required = {"benchmark", "method", "mode", "model", "case", "seconds_per_step", "floor_seconds",
                "ratio_to_floor"}
    assert required <= set(df.columns)
    assert set(df["mode"]) == {"lora", "ft"}
    assert set(df["method"]) == {"jaguar_signsgd", "zo_sgd", "mezo_faithful"}
    for col in ("seconds_per_step", "floor_seconds", "ratio_to_floor", "forward_seconds", "n_forwards",
                "cpu_seconds_per_step", "cpu_ratio_to_floor"):
        values = df[col].astype(float)
        assert values.map(math.isfinite).all() and (values > 0).all(), col
    zo = df[df["method"] == "zo_sgd"]
    assert (zo["ratio_to_mezo"] > 0).all() and (zo["n_forwards"] == 2).all()


def test_overhead_breakdown_has_every_component_with_positive_times():
    df = llm_step.overhead_breakdown(quick=True, reps=1)
    assert list(df["component"]) == ["forward", "draw_z", "copy_pass", "zo_sgd[saved]", "zo_sgd[regenerate]",
                                     "mezo_faithful"]
    assert (df["cpu_seconds"] > 0).all() and df["cpu_seconds"].map(math.isfinite).all()
    row = df.set_index("component")
    assert row.loc["forward", "per_floor"] == 0.5 and row.loc["draw_z", "draws_equivalent"] == 1.0
    assert (df["trainable"] == df["params"]).all()  # full fine-tuning: every weight


def test_memory_worker_returns_a_positive_rss_for_a_tiny_config():
    res = memory.measure("opt-2m", "zo_sgd", "ft", batch=2, seq_len=8, steps=1, timeout=300)
    assert res["status"] == "ok", res
    assert res["peak_rss"] > 0 and res["rss_after_build"] > 0 and res["rss_baseline"] > 0
    assert res["peak_rss"] >= res["peak_after_build"]
    assert res["state_numel"] == 0 and res["trainable"] == res["params"] > 0


def test_memory_run_tabulates_inference_and_a_jaguar_row():
    """The table `zotheory bench` builds (memory.run, as --quick calls it): the inference row has no
    state, JAGUAR's sparse state is counted in bytes (a KeyError here once broke `bench --quick`)."""
    df = memory.run(quick=True, progress=False, methods=("inference", "jaguar_signsgd"), modes=("ft",),
                    config="opt-2m", batch=2, seq_len=8, steps=1, jobs=1)
    rows = df.set_index("method")
    assert set(rows.index) == {"inference", "jaguar_signsgd"} and (rows["status"] == "ok").all(), df
    assert rows.loc["inference", "state_bytes"] == 0 and rows.loc["inference", "state_numel"] == 0
    assert 0 < rows.loc["jaguar_signsgd", "state_bytes"] < 4 * rows.loc["jaguar_signsgd", "trainable"]


def test_scaling_names_unknown_methods_and_sizes():
    with pytest.raises(ValueError, match=r"unknown memory_methods \['zo_sdg'\].*zo_sgd"):
        memory.scaling(memory_methods=("inference", "zo_sdg"))
    with pytest.raises(ValueError, match=r"unknown sizes \['opt-7b'\].*opt-1.3b"):
        memory.scaling(sizes=("opt-7b",))


def test_memory_reports_a_skip_instead_of_launching_what_cannot_fit(monkeypatch):
    monkeypatch.setattr(memory, "_available_bytes", lambda: 2**20)
    res = memory.measure("opt-2m", "adam", "ft", batch=2, seq_len=8, steps=1)
    assert res["status"].startswith("skipped: would need")


# --------------------------------------------------------------------------- exact fast paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_gaussian_draws_in_pieces_equal_the_whole_draw(dtype):
    # What iter_direction_chunks relies on (PyTorch's CPU normal_ fills in order, blocks of 16).
    for n in (16, 17, 33, 1000, 4097, 65541):
        for chunk in (16, 48, 1024):
            g = torch.Generator().manual_seed(5)
            whole, after = torch.randn(n, generator=g, dtype=dtype), torch.randn(3, generator=g, dtype=dtype)
            g = torch.Generator().manual_seed(5)
            parts = [torch.randn(hi - lo, generator=g, dtype=dtype) for lo, hi in directions.chunk_bounds(n, chunk)]
            assert same_bits(torch.cat(parts), whole)
            assert same_bits(torch.randn(3, generator=g, dtype=dtype), after)


def _params(dtype, shapes=((30, 20), (300,), (5,), (17, 9)), seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    w = [torch.randn(s, generator=g) for s in shapes]
    return ps, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("restore", ["saved", "regenerate"])
def test_piecewise_estimates_equal_the_per_tensor_path(monkeypatch, dtype, restore):
    monkeypatch.setattr(directions, "CHUNK", 64)
    x0, w = _params(dtype)
    pieces = list(directions.iter_direction_chunks(x0, 11, "gaussian"))
    assert len(pieces) > len(x0)  # the chunked path is exercised
    whole = directions.generate_directions(x0, 11, "gaussian")
    for k, z in enumerate(whole):
        assert same_bits(torch.cat([zc for i, _, _, zc in pieces if i == k]), z.reshape(-1))
    seen: dict[str, list] = {"a": [], "b": []}

    def closure(xs, tag):
        def f():
            seen[tag].append([bits(x) for x in xs])
            return sum(((x.double() - 0.1) ** 2 * ww).sum() for x, ww in zip(xs, w))
        return f

    a, b = [x.clone() for x in x0], [x.clone() for x in x0]
    ea = estimators.gaussian_two_point(a, closure(a, "a"), 1e-2, seed=11, restore=restore)  # pieces, in place
    eb = estimators.gaussian_two_point(b, closure(b, "b"), 1e-2, z=whole, restore=restore)  # per tensor
    assert torch.equal(ea.scale, eb.scale)
    assert all(same_bits(u, v) for u, v in zip(a, b))
    assert all(torch.equal(u, v) for la, lb in zip(seen["a"], seen["b"]) for u, v in zip(la, lb))


def _run_shell(method, hp, dtype, steps=4, force_plain=False, monkeypatch=None):
    ps, w = _params(dtype)
    ps = [p.requires_grad_() for p in ps]
    opt = optim.make_optimizer(method, ps, lr=1e-2, seed=3, **hp)
    if force_plain:  # the per-tensor update path, the dense JAGUAR path, no reused temporaries
        monkeypatch.setattr(_lists, "FAST_PATHS", False)
    for _ in range(steps):
        opt.step(lambda: sum(((p.float() - 0.3) ** 2 * ww).sum() for p, ww in zip(ps, w)))
    return ps, opt


@pytest.mark.parametrize("method, hp", [
    ("zo_sgd", {}), ("zo_sgd", dict(restore="regenerate")), ("zo_signsgd", dict(queries=2)), ("zo_adamm", {}),
    ("jaguar_signsgd", dict(coords_per_step=1)), ("jaguar_signsgd", dict(coords_per_step=8)),
    ("jaguar_signsgd", dict(mode="block", reset_momentum=True, block_fraction=0.2)),
    ("jaguar_signsgd", dict(mode="block")), ("jaguar_muon", dict(coords_per_step=4)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_shell_paths_equal_the_plain_paths_bitwise(monkeypatch, method, hp, dtype):
    monkeypatch.setattr(directions, "CHUNK", 64)
    a, oa = _run_shell(method, hp, dtype)
    b, ob = _run_shell(method, hp, dtype, force_plain=True, monkeypatch=monkeypatch)
    assert all(same_bits(x, y) for x, y in zip(a, b))
    for sa, sb in zip(oa.kernel_states, ob.kernel_states):
        assert sa.step == sb.step
        for name in ("momentum", "indices", "values", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if getattr(sa, name, None) is not None:  # JAGUAR: the dense or the sparse form
                assert same_bits(getattr(sa, name), getattr(sb, name))


def _mask_split(idx, values, numels):
    """What split_coordinates must return, tensor by tensor with a mask (input order kept)."""
    out, lo = [], 0
    for n in numels:
        m = (idx >= lo) & (idx < lo + n)
        out.append((idx[m] - lo, values[m]) if bool(m.any()) else None)
        lo += n
    return out


def test_sort_based_splits_equal_the_mask_based_ones():
    g = torch.Generator().manual_seed(0)
    numels = [12, 1, 0, 40, 7, 300]  # an empty tensor owns nothing
    total = sum(numels)
    cases = [torch.randperm(total, generator=g)[:k] for k in (1, 5, 64, 200)]
    cases.append(torch.tensor([total + 3, 5, -1, 13, 5]))  # out of range: dropped; repeats kept in order
    cases.append(torch.tensor([], dtype=torch.long))
    for idx in cases:
        values = torch.randn(idx.numel(), generator=g)
        est = CoordinateEstimate(indices=idx, values=values, mode="coordinate", oracle_calls=2)
        got = split_coordinates(est, numels)
        for f, r in zip(got, _mask_split(idx, values, numels), strict=True):
            assert (f is None) == (r is None)
            if f is not None:
                assert torch.equal(f.indices, r[0]) and torch.equal(f.values, r[1])
                assert f.values.data_ptr() != values.data_ptr() and f.mode == "coordinate" and f.oracle_calls == 2
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= total:
            continue
        tensors = [torch.zeros(n) for n in numels]
        offsets = [sum(numels[:j]) for j in range(len(numels) + 1)]
        session = object()
        parts, moved = estimators._split_global(tensors, idx, session)
        expected = [(j, idx[(idx >= offsets[j]) & (idx < offsets[j + 1])] - offsets[j]) for j in range(len(numels))]
        expected = [(j, e) for j, e in expected if e.numel()]
        assert len(parts) == len(expected)
        # the hint for the oracle names the same tensors and local indices (zotheory.llm.prefix reads it)
        assert moved.session is session and len(moved.tensors) == len(expected)
        for t, w, (j, e) in zip(moved.tensors, moved.indices, expected):
            assert t is tensors[j] and torch.equal(w, e)
        for (t, loc), (j, e) in zip(parts, expected):
            flat = loc if isinstance(loc, torch.Tensor) else loc[-1]  # contiguous: the flat indices
            assert t.data_ptr() == tensors[j].data_ptr() and torch.equal(flat.reshape(-1), e)  # input order kept


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_entry_writes_equal_scatter(dtype):
    # estimators._write avoids scatter_ on half-precision CPU tensors (O(numel) in PyTorch 2.x)
    g = torch.Generator().manual_seed(0)
    for shape, k in (((50,), 4), ((3, 50), 4)):
        t = torch.randn(shape, generator=g).to(dtype)
        where = torch.stack([torch.randperm(shape[-1], generator=g)[:k] for _ in range(t.numel() // shape[-1])])
        where = where.reshape(shape[:-1] + (k,))
        values = torch.randn(where.shape, generator=g).to(dtype)
        ref = t.clone().scatter_(-1, where, values)
        got = t.clone()
        estimators._write(got, where, values)
        assert same_bits(got, ref)
