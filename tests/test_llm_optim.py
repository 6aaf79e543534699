"""The torch.optim shells of zotheory.llm.optim: equal to the kernels, bitwise restore, state.

Small parameter lists with a closed-form loss test the plumbing bitwise against the
kernels' own ``step`` (or the estimator + update composition over a list); tiny
random-weight Llama / OPT / RoBERTa models (built from configs, no downloads) test
restore in fp32/bf16/fp16, LoRA vs full fine-tuning, and state round trips.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from bitwise import bits, same_bits
from zotheory import estimators
from zotheory.algorithms import adam, fo_sgd, jaguar_muon, jaguar_signsgd, zo_adamm, zo_muon, zo_sgd, zo_signsgd
from zotheory.algorithms._zo_common import draw_seed
from zotheory.directions import generate_directions
from zotheory.estimates import split_coordinates
from zotheory.estimators import NonFiniteOracleError
from zotheory.random import sample_coordinates

pytest.importorskip("transformers")
pytest.importorskip("peft")

from zotheory.llm import optim  # noqa: E402
from zotheory.llm.models import apply_lora, named_trainable_parameters, tiny_model, trainable_parameters  # noqa: E402
from zotheory.llm.scoring import loss_closure  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

ZO = ("jaguar_signsgd", "jaguar_muon", "zo_sgd", "zo_signsgd", "zo_adamm", "zo_muon")
FO = ("fo_sgd", "adam")
# --------------------------------------------------------------------------- closed-form problems

SHAPES = [(3, 4), (5,), (2, 3)]


def make_params(shapes=SHAPES, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def weights_for(d: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(d, generator=g, dtype=torch.float32) + 0.5, torch.randn(d, generator=g, dtype=torch.float32)


def loss_of(x: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """f(x) = sum(w x^2) + sum(v sin(x)): smooth, non-separable in nothing, cheap, fp32."""
    return (w * x * x).sum() + (v * torch.sin(x)).sum()


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


class Oracle:
    def __init__(self, w, v):
        self.w, self.v = w, v

    def value(self, x):
        return loss_of(x.reshape(-1), self.w, self.v)

    def grad(self, x):
        xx = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.value(xx), xx)
        return g


# --------------------------------------------------------------------------- shell == kernel


@pytest.mark.parametrize("k", [1, 3])
def test_jaguar_signsgd_shell_over_a_list_equals_the_kernel_on_the_concatenation(k):
    params = make_params()
    d = sum(p.numel() for p in params)
    w, v = weights_for(d)
    opt = optim.JaguarSignSGD(params, lr=0.01, tau=1e-3, beta=0.8, coords_per_step=k, seed=7)
    x = flat(params).clone()
    state = jaguar_signsgd.init(x)
    gen = torch.Generator().manual_seed(7)
    oracle = Oracle(w, v)
    for _ in range(12):
        opt.step(lambda: loss_of(flat(params), w, v))
        state = jaguar_signsgd.step(x, oracle, state, gamma=0.01, beta=0.8, tau=1e-3, generator=gen,
                                    coords_per_step=k)
        assert same_bits(flat(params), x)
        assert same_bits(torch.cat([s.momentum.reshape(-1) for s in opt.kernel_states]), state.momentum)
    assert opt.oracle_calls == 12 * 2 * k and opt.steps == 12
    assert torch.equal(opt.generator.get_state(), gen.get_state())


def test_jaguar_signsgd_block_mode_equals_estimator_plus_update():
    params = make_params()
    ref = [p.detach().clone() for p in params]
    d = sum(p.numel() for p in params)
    w, v = weights_for(d)
    opt = optim.JaguarSignSGD(params, lr=0.01, tau=1e-3, beta=0.5, mode="block", block_fraction=0.5, seed=3)
    gen = torch.Generator().manual_seed(3)
    states = [jaguar_signsgd.init(r) for r in ref]
    for _ in range(5):
        opt.step(lambda: loss_of(flat(params), w, v))
        est = estimators.jaguar_block(ref, lambda: loss_of(flat(ref), w, v), 1e-3, fraction=0.5, generator=gen)
        assert est.mode == "block" and est.oracle_calls == 2
        for i, piece in enumerate(split_coordinates(est, [r.numel() for r in ref])):
            if piece is None and not bool(states[i].momentum.ne(0).any()):
                continue
            if piece is None:
                piece = optim._empty_coordinates("block", ref[i].device)
            direction, states[i] = jaguar_signsgd.update(piece, states[i], beta=0.5)
            ref[i] -= (0.01 * direction).to(ref[i].dtype)
        for p, r in zip(params, ref):
            assert same_bits(p, r)


def test_jaguar_muon_block_mode_writes_the_block_into_the_momentum():
    params = [torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.randn(5, generator=torch.Generator().manual_seed(1))]
    w, v = weights_for(sum(p.numel() for p in params))
    opt = optim.JaguarMuon(params, lr=0.01, tau=1e-3, beta=0.5, mode="block", block_fraction=0.5,
                           orthogonalization="exact", seed=3)
    gen = torch.Generator().manual_seed(3)
    ref = [p.detach().clone() for p in params]
    opt.step(lambda: loss_of(flat(params), w, v))
    est = estimators.jaguar_block(ref, lambda: loss_of(flat(ref), w, v), 1e-3, fraction=0.5, generator=gen)
    assert opt.oracle_calls == 2
    pieces = split_coordinates(est, [r.numel() for r in ref])
    m = opt.kernel_states[0].momentum.reshape(-1)
    nonzero = set(m.ne(0).nonzero().reshape(-1).tolist())
    assert nonzero == set(pieces[0].indices.tolist())  # 3 x 2 block of the matrix, one shared value
    assert torch.allclose(m[pieces[0].indices], 0.5 * pieces[0].values.to(m.dtype))


def test_block_mode_with_reset_momentum_moves_only_the_block():
    params = make_params([(10, 10)])
    w, v = weights_for(100)
    opt = optim.JaguarSignSGD(params, lr=0.01, mode="block", block_fraction=0.3, reset_momentum=True, seed=0)
    for _ in range(3):
        before = params[0].detach().clone()
        g = torch.Generator()
        g.set_state(opt.generator.get_state())
        opt.step(lambda: loss_of(flat(params), w, v))
        moved = (params[0].detach() != before).sum().item()
        assert 0 < moved <= 9  # a 3 x 3 block, every other entry still
        assert int(opt.kernel_states[0].momentum.ne(0).sum()) <= 9


def test_jaguar_muon_shell_on_one_matrix_equals_the_kernel():
    (W,) = make_params([(4, 6)])
    w, v = weights_for(24)
    opt = optim.JaguarMuon([W], lr=0.05, tau=1e-3, beta=0.9, coords_per_step=2, seed=11)
    x = W.detach().clone()
    state = jaguar_muon.init(x)
    gen = torch.Generator().manual_seed(11)
    for _ in range(8):
        opt.step(lambda: loss_of(W.detach().reshape(-1), w, v))
        state = jaguar_muon.step(x, Oracle(w, v), state, gamma=0.05, beta=0.9, tau=1e-3, generator=gen,
                                 coords_per_step=2)
        assert same_bits(W, x)
        assert same_bits(opt.kernel_states[0].momentum, state.momentum)


@pytest.mark.parametrize("non_matrix", ["sign", "column"])
def test_jaguar_muon_mixed_ranks_equals_estimator_plus_updates(non_matrix):
    params = make_params([(3, 4), (5,), (2, 2, 2)])
    ref = [p.detach().clone() for p in params]
    d = sum(p.numel() for p in params)
    w, v = weights_for(d)
    opt = optim.JaguarMuon(params, lr=0.02, coords_per_step=d, non_matrix=non_matrix, seed=5)
    assert [opt._state_kind(i) for i in range(3)] == ["matrix", non_matrix, non_matrix]
    gen = torch.Generator().manual_seed(5)

    def matrix(t):
        return t if t.ndim == 2 else t.reshape(t.shape[0], -1) if t.ndim > 2 else t.reshape(-1, 1)

    states = [jaguar_muon.init(matrix(r)) if (r.ndim == 2 or non_matrix == "column") else jaguar_signsgd.init(r)
              for r in ref]
    for _ in range(3):
        opt.step(lambda: loss_of(flat(params), w, v))
        est = estimators.jaguar_coordinates(ref, lambda: loss_of(flat(ref), w, v), 1e-3, k=d, generator=gen)
        for i, piece in enumerate(split_coordinates(est, [r.numel() for r in ref])):
            if isinstance(states[i], jaguar_muon.JaguarMuonState):
                direction, states[i] = jaguar_muon.update(piece, states[i], beta=0.9, orthogonalization="ns3")
                ref[i] -= (0.02 * direction).reshape(ref[i].shape)
            else:
                direction, states[i] = jaguar_signsgd.update(piece, states[i], beta=0.9)
                ref[i] -= 0.02 * direction
        for p, r in zip(params, ref):
            assert same_bits(p, r)


def _single(shape=(4, 5), seed=0):
    (x,) = make_params([shape], seed=seed)
    w, v = weights_for(x.numel())
    return x, w, v


@pytest.mark.parametrize(
    "method, kernel, hp, kernel_hp",
    [
        ("zo_sgd", zo_sgd, {}, {}),
        ("zo_signsgd", zo_signsgd, {"queries": 3}, {"queries": 3}),
        ("zo_adamm", zo_adamm, {"beta1": 0.8, "beta2": 0.99}, {"beta1": 0.8, "beta2": 0.99}),
        ("zo_muon", zo_muon, {}, {}),
    ],
)
def test_gaussian_shells_on_one_tensor_equal_the_kernels(method, kernel, hp, kernel_hp):
    W, w, v = _single()
    opt = optim.make_optimizer(method, [W], lr=0.01, tau=1e-2, seed=21, **hp)
    x = W.detach().clone()
    state = kernel.init(x)
    gen = torch.Generator().manual_seed(21)
    for _ in range(6):
        opt.step(lambda: loss_of(W.detach().reshape(-1), w, v))
        state = kernel.step(x, Oracle(w, v), state, gamma=0.01, tau=1e-2, generator=gen, **kernel_hp)
        assert same_bits(W, x)
    if method == "zo_adamm":
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert same_bits(getattr(opt.kernel_states[0], name), getattr(state, name))
    assert torch.equal(opt.generator.get_state(), gen.get_state())


def test_zo_sgd_shell_over_a_list_follows_the_formula():
    params = make_params()
    ref = [p.detach().clone() for p in params]
    d = sum(p.numel() for p in params)
    w, v = weights_for(d)
    opt = optim.ZOSGD(params, lr=0.01, tau=1e-3, seed=2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        opt.step(lambda: loss_of(flat(params), w, v))
        seed = draw_seed(gen)
        zs = generate_directions(ref, seed, "gaussian")
        cat = torch.cat([z.reshape(-1) for z in zs])
        x0 = flat(ref)
        scale = (loss_of(x0 + 1e-3 * cat, w, v) - loss_of(x0 - 1e-3 * cat, w, v)) / (2 * torch.tensor(1e-3))
        for r, z in zip(ref, zs):
            r -= 0.01 * (scale * z)
        for p, r in zip(params, ref):
            assert same_bits(p, r)


@pytest.mark.parametrize("method, kernel, hp", [("fo_sgd", fo_sgd, {}), ("adam", adam, {"beta1": 0.7})])
def test_first_order_shells_equal_the_kernels(method, kernel, hp):
    W, w, v = _single((3, 7))
    opt = optim.make_optimizer(method, [W], lr=0.03, **hp)
    x = W.detach().clone()
    state = kernel.init(x)
    for _ in range(5):
        loss = opt.step(lambda: loss_of(W.reshape(-1), w, v))
        state = kernel.step(x, Oracle(w, v), state, gamma=0.03, **hp)
        assert same_bits(W, x)
        assert W.grad is None and loss.ndim == 0
    assert opt.oracle_calls == 5


# --------------------------------------------------------------------------- restore, LoRA, FT


def _tiny(arch="llama", dtype=torch.float32, lora=False):
    model, tok = tiny_model(arch, seed=0, dtype=dtype)
    if lora:
        model = apply_lora(model, r=2, alpha=4, seed=0)
    return model, tok


@dataclasses.dataclass(frozen=True)
class Ex:
    context: str
    candidates: tuple
    label: int


BATCH = [Ex("The movie was great. It was", (" terrible", " great"), 1),
         Ex("a dull plot. It was", (" terrible", " great"), 0),
         Ex("the cast is good, so", (" yes", " no"), 0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ZO)
def test_estimate_restores_parameters_bitwise(method, dtype):
    model, tok = _tiny("llama", dtype)
    params = trainable_parameters(model)
    before = [bits(p) for p in params]
    hp = {"coords_per_step": 4} if method.startswith("jaguar") else {}
    opt = optim.make_optimizer(method, params, lr=1e-3, tau=0.05, **hp)
    closure = loss_closure(model, tok, BATCH)
    seen_moved = []

    def recording():
        seen_moved.append(any(not torch.equal(bits(p), b) for p, b in zip(params, before)))
        value = closure()
        assert value.dtype == torch.float32
        return value

    with torch.no_grad():
        est = opt.estimate(recording)
    assert all(torch.equal(bits(p), b) for p, b in zip(params, before))
    assert len(seen_moved) == (8 if method.startswith("jaguar") else 2) and any(seen_moved)
    opt.apply_estimate(est)  # the move then changes something
    assert any(not torch.equal(bits(p), b) for p, b in zip(params, before))


def test_regenerate_restore_is_close_in_fp32_but_named():
    model, tok = _tiny("opt")
    params = trainable_parameters(model)
    before = [p.detach().clone() for p in params]
    opt = optim.ZOSGD(params, lr=1e-3, restore="regenerate")
    with torch.no_grad():
        opt.estimate(loss_closure(model, tok, BATCH))
    for p, b in zip(params, before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "opt", "roberta"])
@pytest.mark.parametrize("method", ["jaguar_signsgd", "zo_sgd", "adam"])
def test_lora_changes_only_adapter_weights(arch, method):
    model, tok = _tiny(arch, lora=True)
    named_all = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in named_all.items()}
    trainable = dict(named_trainable_parameters(model))
    assert trainable and all("lora_" in n for n in trainable)
    hp = {"coords_per_step": 64} if method == "jaguar_signsgd" else {}
    opt = optim.make_optimizer(method, list(trainable.values()), lr=1e-2, **hp)
    for _ in range(2):
        opt.step(loss_closure(model, tok, BATCH, grad=method == "adam"))
    changed = {n for n, p in named_all.items() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= set(trainable)
    if method != "jaguar_signsgd":  # Gaussian and first-order moves touch every adapter
        assert changed == set(trainable)


@pytest.mark.parametrize("arch", ["llama", "opt", "roberta"])
@pytest.mark.parametrize("method", ["zo_sgd", "zo_muon", "fo_sgd"])
def test_full_fine_tuning_changes_every_trainable_tensor(arch, method):
    model, tok = _tiny(arch)
    named = named_trainable_parameters(model)
    assert len(named) == len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in named}
    opt = optim.make_optimizer(method, [p for _, p in named], lr=1e-2)
    opt.step(loss_closure(model, tok, BATCH, grad=method == "fo_sgd"))
    unchanged = [n for n, p in named if torch.equal(p.detach(), before[n])]
    assert unchanged == []


def test_jaguar_on_a_model_moves_exactly_the_coordinates_with_momentum():
    model, tok = _tiny("opt")
    params = trainable_parameters(model)
    opt = optim.JaguarSignSGD(params, lr=1e-2, coords_per_step=16, seed=4)
    closure = loss_closure(model, tok, BATCH)
    opt.step(closure)
    m1 = torch.cat([s.momentum.reshape(-1) for s in opt.kernel_states]).clone()
    x1 = flat(params).clone()
    g = torch.Generator()
    g.set_state(opt.generator.get_state())
    idx2 = sample_coordinates(x1.numel(), 16, g)
    opt.step(closure)
    m2 = torch.cat([s.momentum.reshape(-1) for s in opt.kernel_states])
    x2 = flat(params)
    keep = torch.ones_like(m1, dtype=torch.bool)
    keep[idx2] = False
    assert torch.equal(m2[keep], m1[keep])  # momentum persists off the sampled coordinates
    assert int(m1.ne(0).sum()) > 0
    assert same_bits(x2, x1 - (1e-2 * torch.sign(m2)))  # every coordinate with momentum moves
    assert torch.equal(x2 != x1, m2 != 0)


# --------------------------------------------------------------------------- state, errors


@pytest.mark.parametrize("method", ZO + FO)
def test_state_dict_round_trip_continues_bitwise(method):
    params = make_params([(3, 4), (5,)])
    d = sum(p.numel() for p in params)
    w, v = weights_for(d)
    hp = {"coords_per_step": 2} if method.startswith("jaguar") else {}

    def closure_for(ps):
        if method in FO:
            return lambda: loss_of(torch.cat([p.reshape(-1) for p in ps]), w, v)
        return lambda: loss_of(flat(ps), w, v)

    a = optim.make_optimizer(method, params, lr=0.01, seed=9, **hp)
    for _ in range(3):
        a.step(closure_for(params))
    saved_sd = copy.deepcopy(a.state_dict())
    saved_x = [p.detach().clone() for p in params]
    for _ in range(3):
        a.step(closure_for(params))
    params_b = [torch.nn.Parameter(x.clone()) for x in saved_x]
    b = optim.make_optimizer(method, params_b, lr=0.5, seed=0, **hp)  # lr and seed come from the state
    b.load_state_dict(saved_sd)
    for _ in range(3):
        b.step(closure_for(params_b))
    for p, q in zip(params, params_b):
        assert same_bits(p, q)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert (a.steps, a.oracle_calls) == (b.steps, b.oracle_calls)
    for sa, sb in zip(a.kernel_states, b.kernel_states):
        for name, value in optim._state_fields(sa).items():
            other = getattr(sb, name)
            assert same_bits(value, other) if isinstance(value, torch.Tensor) else value == other


def test_load_state_dict_rejects_another_method_or_shape():
    params = make_params([(3, 4)])
    sd = optim.ZOSGD(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="method"):
        optim.ZOAdaMM(params, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="shapes"):
        optim.ZOSGD(make_params([(4, 3)]), lr=0.1).load_state_dict(sd)


def test_state_sizes_match_the_documented_table():
    params = make_params()
    d = sum(p.numel() for p in params)
    expected = {"jaguar_signsgd": d, "jaguar_muon": d, "zo_sgd": 0, "zo_signsgd": 0, "zo_adamm": 3 * d,
                "zo_muon": 0, "fo_sgd": 0, "adam": 2 * d}
    assert set(expected) == set(optim.METHODS)
    for method, numel in expected.items():
        assert optim.state_numel(optim.make_optimizer(method, params, lr=0.1)) == numel, method


def test_hyperparameter_errors_name_the_argument():
    params = make_params()
    with pytest.raises(ValueError, match="unknown hyperparameter.*'betta'"):
        optim.make_optimizer("jaguar_signsgd", params, lr=0.1, betta=0.9)
    with pytest.raises(ValueError, match="beta must be in"):
        optim.make_optimizer("jaguar_signsgd", params, lr=0.1, beta=1.0)
    with pytest.raises(ValueError, match="lr must be"):
        optim.make_optimizer("zo_sgd", params, lr=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        optim.make_optimizer("jaguar_signsgd", params, lr=0.1, mode="rows")
    with pytest.raises(ValueError, match="restore must be one of"):
        optim.make_optimizer("zo_sgd", params, lr=0.1, restore="undo")
    with pytest.raises(ValueError, match="method must be one of"):
        optim.make_optimizer("sgd", params, lr=0.1)
    with pytest.raises(ValueError, match="one parameter group"):
        optim.ZOSGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        optim.ZOSGD(params, lr=0.1).step()


@pytest.mark.parametrize("method", ZO + FO)
def test_non_finite_loss_raises_with_parameters_and_state_untouched(method):
    params = make_params([(3, 4), (5,)])
    before = [p.detach().clone() for p in params]
    opt = optim.make_optimizer(method, params, lr=0.1, **({"coords_per_step": 2} if method.startswith("jaguar") else {}))
    gen_before = opt.generator.get_state()

    def nan_closure():
        return flat(params).sum() * float("nan") if method in ZO else (params[0] * float("inf")).sum()

    with pytest.raises(NonFiniteOracleError):
        opt.step(nan_closure)
    assert all(same_bits(p, b) for p, b in zip(params, before))
    assert opt.steps == 0
    for s in opt.kernel_states:
        for value in optim._state_fields(s).values():
            if isinstance(value, torch.Tensor):
                assert not bool(value.ne(0).any())
    if method in FO:
        assert torch.equal(opt.generator.get_state(), gen_before)


def test_step_returns_the_mean_of_the_oracle_values():
    (W,) = make_params([(6,)])
    w, v = weights_for(6)
    values = []

    def closure():
        values.append(loss_of(W.detach(), w, v))
        return values[-1]

    loss = optim.ZOSGD([W], lr=1e-3).step(closure)
    assert len(values) == 2 and torch.equal(loss, torch.stack(values).mean())


def test_torch_lr_schedulers_drive_the_shells_and_survive_a_state_round_trip():
    params = make_params([(4,)])
    opt = optim.ZOSGD(params, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5**t)
    for _ in range(3):
        opt.step(lambda: (flat(params) ** 2).sum())
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)
    other = optim.ZOSGD(make_params([(4,)]), lr=1.0)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_jaguar_needs_no_more_coordinates_than_entries():
    params = make_params([(2, 2)])
    opt = optim.JaguarSignSGD(params, lr=0.1, coords_per_step=5)
    with pytest.raises(ValueError, match="coords_per_step must be <= the number of trainable entries 4"):
        opt.step(lambda: flat(params).sum())
