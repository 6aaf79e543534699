"""JAGUAR's sparse momentum (indices + values) is exactly the dense pseudocode.

``jaguar_signsgd`` / ``jaguar_muon`` keep an unbatched momentum as sorted flat indices and
the values there while they are at most ``1 / SPARSE_FRACTION`` of the tensor, and switch to
the dense buffer before a write that could pass that (module doc, "State"). These tests run
the two forms side by side (and against the literal reference) over hundreds of steps on
small tensors, so coordinates are sampled again and again, and check every iterate, every
momentum and the generator bit for bit; then the switch, the state_dict round trip (a
checkpoint with a dense momentum included) and the memory the form holds.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from bitwise import same_bits
from zotheory import optim
from zotheory.algorithms import _lists, jaguar_muon, jaguar_signsgd
from zotheory.estimates import CoordinateEstimate
from zotheory.reference import jaguar_signsgd as ref_jaguar

F64 = torch.float64


def make_f(d: int, seed: int, T: int):
    """A non-convex separable f with a fresh linear noise term per iteration."""
    xis = torch.randn(T, d, generator=torch.Generator().manual_seed(seed), dtype=F64) * 0.1

    def f(x: torch.Tensor, t: int) -> torch.Tensor:
        x = x.to(F64)
        return (0.5 * x * x + 0.7 * (1 - torch.cos(3.0 * x))).sum() + (xis[t] * x).sum()

    return f


class Oracle:
    def __init__(self, f, t):
        self.f, self.t = f, t

    def value(self, x):
        return self.f(x.reshape(-1), self.t)


def dense_state(state):
    """The same (zero) state in the dense form, for a side-by-side run."""
    return [jaguar_signsgd.to_dense(s) for s in state] if isinstance(state, list) else jaguar_signsgd.to_dense(state)


def momenta(states):
    return torch.cat([jaguar_signsgd.dense_momentum(s).reshape(-1) for s in states])


@pytest.fixture(params=[1, jaguar_signsgd.SPARSE_FRACTION], ids=["sparse-till-full", "default-switch"])
def fraction(request, monkeypatch):
    """SPARSE_FRACTION = 1 keeps the sparse form until every entry is held (many repeats)."""
    monkeypatch.setattr(jaguar_signsgd, "SPARSE_FRACTION", request.param)
    return request.param


# --------------------------------------------------------------------------- one tensor


def test_sparse_equals_the_literal_reference_over_many_repeats(fraction):
    d, T, seed = 12, 300, 3  # 300 draws of 12 coordinates: every coordinate ~25 times
    f = make_f(d, 5, T)
    x0 = torch.linspace(-1.3, 1.1, d, dtype=F64)
    xs, ms = ref_jaguar.run(f, x0, T, gamma=0.01, beta=0.9, tau=2.0**-10,
                            generator=torch.Generator().manual_seed(seed))
    x, state, gen = x0.clone(), jaguar_signsgd.init(x0), torch.Generator().manual_seed(seed)
    assert jaguar_signsgd.is_sparse(state)
    was_sparse = 0
    for t in range(T):
        state = jaguar_signsgd.step(x, Oracle(f, t), state, gamma=0.01, beta=0.9, tau=2.0**-10, generator=gen)
        was_sparse += jaguar_signsgd.is_sparse(state)
        assert torch.equal(jaguar_signsgd.dense_momentum(state), torch.tensor(ms[t], dtype=F64)), t
        assert torch.equal(x, torch.tensor(xs[t + 1], dtype=F64)), t
    assert was_sparse >= (11 if fraction == 1 else 0)  # the sparse form really ran (until all 12 are held)


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, F64])
def test_sparse_and_dense_single_tensor_equal_bitwise(fraction, k, dtype):
    shape, T = (8, 9), 250
    f = make_f(72, 1, T)
    x_s = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x_d = x_s.clone()
    s_s = jaguar_signsgd.init(x_s)
    s_d = dense_state(jaguar_signsgd.init(x_d))
    g_s, g_d = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    kw = dict(gamma=0.02, beta=0.8, tau=1e-2, coords_per_step=k)
    sparse_steps = 0
    for t in range(T):
        s_s = jaguar_signsgd.step(x_s, Oracle(f, t), s_s, generator=g_s, **kw)
        s_d = jaguar_signsgd.step(x_d, Oracle(f, t), s_d, generator=g_d, **kw)
        sparse_steps += jaguar_signsgd.is_sparse(s_s)
        assert not jaguar_signsgd.is_sparse(s_d)
        assert same_bits(x_s, x_d), t
        assert same_bits(jaguar_signsgd.dense_momentum(s_s), s_d.momentum), t
        assert s_s.step == s_d.step == t + 1
    assert torch.equal(g_s.get_state(), g_d.get_state())
    assert sparse_steps > 0


def test_pure_update_and_inplace_false_leave_a_sparse_state_alone():
    x = torch.zeros(400, dtype=F64)
    state = jaguar_signsgd.init(x)
    e = CoordinateEstimate(indices=torch.tensor([3, 1]), values=torch.tensor([2.0, -1.0], dtype=F64))
    _, state = jaguar_signsgd.update(e, state, beta=0.5)
    before = copy.deepcopy(state)
    d, new = jaguar_signsgd.update(CoordinateEstimate(indices=torch.tensor([1]), values=torch.tensor([4.0], dtype=F64)),
                                   state, beta=0.5)
    assert torch.equal(state.indices, before.indices) and torch.equal(state.values, before.values)
    assert new.indices.tolist() == [1, 3] and new.values.tolist() == [0.5 * -0.5 + 0.5 * 4.0, 1.0]
    assert d.tolist() == [0, 1, 0, 1] + [0] * 396
    jaguar_signsgd.step(x, Oracle(make_f(400, 0, 1), 0), state, gamma=0.1, beta=0.5, tau=1e-3,
                        indices=torch.tensor([1]), inplace=False)
    assert torch.equal(state.values, before.values)


# --------------------------------------------------------------------------- the switch


def test_the_switch_rule_turns_dense_before_a_write_that_could_pass_the_fraction():
    """numel 32, SPARSE_FRACTION 16: sparse while held + written <= 2."""
    assert jaguar_signsgd.SPARSE_FRACTION == 16
    x = torch.zeros(32)
    f = make_f(32, 0, 10)
    state = jaguar_signsgd.init(x)
    kw = dict(gamma=0.1, beta=0.5, tau=1e-2)
    for t, (i, sparse) in enumerate([(0, True), (1, True), (1, False), (2, False)]):
        state = jaguar_signsgd.step(x, Oracle(f, t), state, indices=torch.tensor([i]), **kw)
        assert jaguar_signsgd.is_sparse(state) == sparse, (t, i)
    # a block write (here 4 of 32 entries) turns a fresh state dense at once
    state = jaguar_signsgd.init(torch.zeros(32))
    e = CoordinateEstimate(indices=torch.arange(4), values=torch.ones(4), mode="block")
    state = jaguar_signsgd.apply(torch.zeros(32), state, e, gamma=0.1, beta=0.5)
    assert not jaguar_signsgd.is_sparse(state) and state.indices is None


def test_held_entries_grow_with_steps_and_stay_below_two_per_sample():
    d, k = 4096, 3
    x = torch.zeros(d)
    state, gen = jaguar_signsgd.init(x), torch.Generator().manual_seed(0)
    f = make_f(d, 0, 60)
    for t in range(60):
        state = jaguar_signsgd.step(x, Oracle(f, t), state, gamma=0.1, beta=0.5, tau=1e-2, coords_per_step=k,
                                    generator=gen)
        assert jaguar_signsgd.is_sparse(state)
        assert 0 < state.indices.numel() <= k * (t + 1)
        assert bool((state.indices[1:] > state.indices[:-1]).all())  # sorted, distinct
        assert torch.equal(jaguar_signsgd.dense_momentum(state).ne(0).nonzero().reshape(-1), state.indices)


# --------------------------------------------------------------------------- lists (parameter groups)


def _list_run(xs, states, T, *, k, reset=False, seed=2):
    f = make_f(sum(t.numel() for t in xs), 9, T)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(T):
        states = jaguar_signsgd.step(
            xs, lambda t=t: f(torch.cat([p.reshape(-1) for p in xs]), t), states, gamma=[0.01, 0.02, 0.005],
            beta=[0.9, 0.5, 0.0], weight_decay=[0.0, 0.1, 0.0], tau=1e-2, coords_per_step=k, generator=gen,
            reset_momentum=reset)
        out.append(([p.clone() for p in xs], momenta(states), [jaguar_signsgd.is_sparse(s) for s in states]))
    return out, gen


@pytest.mark.parametrize("k", [1, 6])
@pytest.mark.parametrize("reset", [False, True])
def test_lists_with_per_tensor_hyperparameters_sparse_equals_dense(fraction, k, reset):
    def params():
        g = torch.Generator().manual_seed(1)
        return [torch.randn(10, 12, generator=g), torch.randn(40, generator=g), torch.randn(3, 4, 5, generator=g)]

    xs_s, xs_d = params(), params()
    a, ga = _list_run(xs_s, jaguar_signsgd.init(xs_s), 200, k=k, reset=reset)
    b, gb = _list_run(xs_d, dense_state(jaguar_signsgd.init(xs_d)), 200, k=k, reset=reset)
    for t, ((pa, ma, sa), (pb, mb, sb)) in enumerate(zip(a, b)):
        assert all(same_bits(p, q) for p, q in zip(pa, pb)), t
        assert same_bits(ma, mb), t
        assert not any(sb)
    assert any(any(s) for _, _, s in a)  # sparse states were exercised
    assert torch.equal(ga.get_state(), gb.get_state())


def test_fast_paths_off_gives_the_same_bits(monkeypatch):
    def params():
        g = torch.Generator().manual_seed(1)
        return [torch.randn(10, 12, generator=g), torch.randn(40, generator=g), torch.randn(3, 4, 5, generator=g)]

    xs_a, xs_b = params(), params()
    a, _ = _list_run(xs_a, jaguar_signsgd.init(xs_a), 60, k=2)
    monkeypatch.setattr(_lists, "FAST_PATHS", False)
    b, _ = _list_run(xs_b, jaguar_signsgd.init(xs_b), 60, k=2)
    for (pa, ma, sa), (pb, mb, sb) in zip(a, b):
        assert all(same_bits(p, q) for p, q in zip(pa, pb)) and same_bits(ma, mb) and sa == sb


@pytest.mark.parametrize("non_matrix", ["sign", "column"])
def test_jaguar_muon_sparse_equals_dense(fraction, non_matrix):
    def params():
        g = torch.Generator().manual_seed(3)
        return [torch.randn(6, 8, generator=g), torch.randn(30, generator=g), torch.randn(5, 7, generator=g)]

    runs = []
    for dense in (False, True):
        xs = params()
        states = jaguar_muon.init(xs, non_matrix=non_matrix)
        if dense:
            states = dense_state(states)
        f = make_f(sum(t.numel() for t in xs), 2, 120)
        gen = torch.Generator().manual_seed(8)
        trace = []
        for t in range(120):
            states = jaguar_muon.step(xs, lambda t=t: f(torch.cat([p.reshape(-1) for p in xs]), t), states,
                                      gamma=0.01, beta=[0.9, 0.8, 0.7], tau=1e-2, coords_per_step=2, generator=gen,
                                      ns_steps=3)
            trace.append(([p.clone() for p in xs], momenta(states), [jaguar_signsgd.is_sparse(s) for s in states]))
        runs.append(trace)
    for t, ((pa, ma, sa), (pb, mb, sb)) in enumerate(zip(*runs)):
        assert all(same_bits(p, q) for p, q in zip(pa, pb)), t
        assert same_bits(ma, mb), t
        assert not any(sb)
    assert any(any(s) for _, _, s in runs[0])


def test_batched_runs_stay_dense():
    state = jaguar_signsgd.init(torch.zeros(3, 50), batch_dims=1)
    assert not jaguar_signsgd.is_sparse(state) and state.momentum.shape == (3, 50)
    assert not jaguar_signsgd.is_sparse(jaguar_muon.init(torch.zeros(2, 4, 5), batch_dims=1))


# --------------------------------------------------------------------------- optimizer: memory, state_dict


def _model_params(seed=0):
    """A matrix that stays sparse, a vector, and 20 small tensors (biases): any coordinate
    that falls in one of those turns it dense (1 entry > 15 / 16)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(200, 300), (500,)] + [(15,)] * 20
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _closure(params, t):
    w = torch.linspace(-1, 1, sum(p.numel() for p in params))
    return lambda: ((torch.cat([p.detach().reshape(-1) for p in params]) - 0.1 * (t % 7)) ** 2 * w).sum()


@pytest.mark.parametrize("method", ["jaguar_signsgd", "jaguar_muon"])
def test_optimizer_state_is_o_steps_times_k_and_init_allocates_nothing(method):
    params, k = _model_params(), 16
    opt = optim.make_optimizer(method, params, lr=1e-3, coords_per_step=k)
    assert optim.state_numel(opt) == 0 and optim.state_nbytes(opt) == 0
    d = sum(p.numel() for p in params)
    for t in range(1, 41):
        opt.step(_closure(params, t))
        states = opt.kernel_states
        held = sum(jaguar_signsgd.held(s) for s in states if jaguar_signsgd.is_sparse(s))
        dense = sum(s.momentum.numel() for s in states if not jaguar_signsgd.is_sparse(s))
        assert optim.state_numel(opt) == 2 * held + dense
        assert optim.state_nbytes(opt) == 12 * held + 4 * dense
        assert held <= k * t
    assert jaguar_signsgd.is_sparse(states[0]) and jaguar_signsgd.is_sparse(states[1])
    assert 0 < dense <= 20 * 15  # some small tensors were hit: dense
    assert optim.state_numel(opt) < d / 20


def test_a_sparse_step_allocates_nothing_of_the_tensor_size():
    """CPU allocations of a step on a 4 Mi-entry tensor: none near its 16 MiB (a dense
    direction, momentum or mask would be one)."""
    x = torch.zeros(2**22)
    state, gen = jaguar_signsgd.init(x), torch.Generator().manual_seed(0)
    f = lambda: x[:8].sum()  # noqa: E731  (a cheap oracle: the step's own allocations are measured)
    for _ in range(20):
        state = jaguar_signsgd.step(x, f, state, gamma=0.1, beta=0.5, tau=1e-2, coords_per_step=8, generator=gen)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        state = jaguar_signsgd.step(x, f, state, gamma=0.1, beta=0.5, tau=1e-2, coords_per_step=8, generator=gen)
    biggest = max((e.cpu_memory_usage for e in prof.events()), default=0)
    assert jaguar_signsgd.is_sparse(state) and 0 < biggest < 2**16, biggest


@pytest.mark.parametrize("method", ["jaguar_signsgd", "jaguar_muon"])
def test_state_dict_round_trip_of_sparse_and_dense_states_continues_bitwise(method):
    def make(params, seed):
        return optim.make_optimizer(method, params, lr=1e-3, coords_per_step=16, seed=seed)

    params = _model_params()
    a = make(params, 3)
    for t in range(30):
        a.step(_closure(params, t))
    sd = a.state_dict()
    kinds = [jaguar_signsgd.is_sparse(s) for s in a.kernel_states]
    assert kinds[0] and not all(kinds)  # the matrix sparse, some small tensors dense
    for entry, sparse in zip(sd["state"].values(), kinds):
        assert (entry["momentum"] is None) == sparse and (entry["indices"] is None) != sparse
    buf = io.BytesIO()
    torch.save(sd, buf)  # what llm/train.py's checkpoint does
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    saved_x = [p.detach().clone() for p in params]
    for t in range(30, 60):
        a.step(_closure(params, t))
    params_b = [torch.nn.Parameter(x.clone()) for x in saved_x]
    b = make(params_b, 0)
    b.load_state_dict(saved)
    assert [jaguar_signsgd.is_sparse(s) for s in b.kernel_states] == kinds
    for t in range(30, 60):
        b.step(_closure(params_b, t))
    assert all(same_bits(p, q) for p, q in zip(params, params_b))
    assert same_bits(momenta(a.kernel_states), momenta(b.kernel_states))
    assert [s.step for s in a.kernel_states] == [s.step for s in b.kernel_states]


def test_a_checkpoint_with_a_dense_momentum_loads_sparse_and_continues_bitwise():
    """Checkpoints written before the sparse form hold ``momentum`` (dense) and no indices."""
    params = _model_params()
    a = optim.JaguarSignSGD(params, lr=1e-3, coords_per_step=16, seed=1)
    for t in range(20):
        a.step(_closure(params, t))
    sd = copy.deepcopy(a.state_dict())
    old = copy.deepcopy(sd)
    for entry, s in zip(old["state"].values(), a.kernel_states):
        entry.pop("indices"), entry.pop("values")
        entry["momentum"] = jaguar_signsgd.dense_momentum(s).clone()
    old["state"][0]["momentum"].view(-1)[7] = -0.0  # a -0.0 entry is kept (bits, not values)
    sd_x = [p.detach().clone() for p in params]
    outs = []
    for state_dict in (sd, old):
        ps = [torch.nn.Parameter(x.clone()) for x in sd_x]
        b = optim.JaguarSignSGD(ps, lr=1e-3, coords_per_step=16, seed=0)
        b.load_state_dict(state_dict)
        outs.append((ps, b))
    (_, b_new), (_, b_old) = outs
    kinds = [jaguar_signsgd.is_sparse(s) for s in a.kernel_states]
    assert kinds[0] and not all(kinds) and [jaguar_signsgd.is_sparse(s) for s in b_old.kernel_states] == kinds
    assert 7 in b_old.kernel_states[0].indices.tolist()
    b_old.kernel_states[0].values[b_old.kernel_states[0].indices == 7] = 0.0  # back to +0: same bits as `sd`
    for t in range(20, 40):
        for ps, b in outs:
            b.step(_closure(ps, t))
    assert all(same_bits(p, q) for p, q in zip(outs[0][0], outs[1][0]))
    assert same_bits(momenta(b_new.kernel_states), momenta(b_old.kernel_states))


def test_load_rejects_bad_sparse_entries():
    params = _model_params()
    a = optim.JaguarSignSGD(params, lr=1e-3, coords_per_step=8)
    a.step(_closure(params, 0))
    sd = copy.deepcopy(a.state_dict())
    sd["state"][0]["indices"] = sd["state"][0]["indices"].flip(0)
    with pytest.raises(ValueError, match="sorted and distinct"):
        optim.JaguarSignSGD(_model_params(), lr=1e-3, coords_per_step=8).load_state_dict(sd)
    sd = copy.deepcopy(a.state_dict())
    sd["state"][0]["indices"][-1] = 60000
    with pytest.raises(ValueError, match="must lie in"):
        optim.JaguarSignSGD(_model_params(), lr=1e-3, coords_per_step=8).load_state_dict(sd)
    sd = copy.deepcopy(a.state_dict())
    sd["state"][0]["momentum"] = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="momentum has shape"):
        optim.JaguarSignSGD(_model_params(), lr=1e-3, coords_per_step=8).load_state_dict(sd)


def test_with_entries_stands_in_for_a_long_run():
    """What the memory benchmark loads: the form the switch rule gives that many entries."""
    x = torch.zeros(1000)
    s = jaguar_signsgd.with_entries(jaguar_signsgd.init(x), torch.tensor([5, 2, 9]), torch.tensor([1.0, -2.0, 3.0]))
    assert jaguar_signsgd.is_sparse(s) and s.indices.tolist() == [2, 5, 9] and s.values.tolist() == [-2.0, 1.0, 3.0]
    x = torch.zeros(1008)
    s = jaguar_signsgd.with_entries(jaguar_signsgd.init(x), torch.arange(63), torch.ones(63))  # 63 * 16 == 1008
    s2 = jaguar_signsgd.with_entries(jaguar_signsgd.init(x), torch.arange(64), torch.ones(64))
    assert jaguar_signsgd.is_sparse(s) and not jaguar_signsgd.is_sparse(s2)
    assert torch.equal(s2.momentum, jaguar_signsgd.dense_momentum(s2)) and int(s2.momentum.sum()) == 64


def test_the_benchmarks_long_run_state_is_sparse_and_touches_every_tensor():
    from zotheory.benchmarks.memory import long_run_state

    params = _model_params()
    opt = optim.JaguarSignSGD(params, lr=1e-3, coords_per_step=8)
    held = long_run_state(opt, "k", steps=100)
    states = opt.kernel_states
    assert jaguar_signsgd.is_sparse(states[0]) and 700 < states[0].indices.numel() <= 801
    assert all(jaguar_signsgd.held(s) >= 1 for s in states) and held == sum(jaguar_signsgd.held(s) for s in states)
    assert optim.state_nbytes(opt) < 12 * 1000 + 4 * 20 * 15
    opt.step(_closure(params, 0))  # a real step from there
    assert long_run_state(optim.ZOSGD(_model_params(), lr=1e-3), "k") == 0
