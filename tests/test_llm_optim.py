"""zotheory.optim: one torch.optim adapter per registry algorithm over the kernels' list steps.

* Every registry algorithm has an optimizer; on a tiny random-weight Llama with peft LoRA,
  ``Opt(model.parameters())`` moves only the adapters, frozen tensors keep their bits, and
  the state holds numbers for the trainable entries only.
* For every algorithm the optimizer's step equals the kernel's ``step`` called on the same
  parameters with the same draws, bitwise (the adapter adds nothing algorithmic).
* The kernels' list path equals their single-tensor path on the concatenation (which
  ``tests/test_reference.py`` ties to the literal pseudocode).
* torch.optim conventions: parameter groups with their own lr, hyperparameters checked at
  every step, frozen parameters skipped, weight decay, closures that call backward,
  first-order ``step()`` from ``p.grad``, state_dict round trips.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from bitwise import bits, same_bits
from examples import BATCH
from zotheory import estimators, optim
from zotheory.algorithms import ALGORITHMS, get_algorithm, jaguar_muon, jaguar_signsgd, zo_sgd
from zotheory.algorithms._zo_common import draw_seed
from zotheory.algorithms.jaguar_signsgd import dense_momentum
from zotheory.directions import generate_directions
from zotheory.estimates import split_coordinates
from zotheory.estimators import NonFiniteOracleError

pytest.importorskip("transformers")
pytest.importorskip("peft")

from zotheory.llm.models import apply_lora, tiny_model  # noqa: E402
from zotheory.llm.scoring import functional_loss, loss_closure  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

#: Registry entries with an optimizer: all but the constrained kernels (their step takes a set Q).
METHODS = sorted(n for n, a in ALGORITHMS.items() if not a.constrained)
#: Hyperparameters that make each method move a tiny LoRA model within two steps.
HP = {m: {} for m in METHODS}
HP.update({"jaguar_signsgd": {"coords_per_step": 64}, "jaguar_muon": {"coords_per_step": 64},
           "lezo": {"drop_layers": 1}})
#: Numbers of optimizer state per trainable entry (the docstrings' tables).
STATE_PER_ENTRY = {"jaguar_signsgd": 1, "jaguar_muon": 1, "jaguar_signsgd_released": 2, "zo_sgd": 0,
                   "zo_signsgd": 0, "zo_adamm": 3, "zo_muon": 0, "acc_zom": 2, "zo_sgd_cons": 0, "zo_jaguar": 1,
                   "lezo": 0, "forward_grad": 0, "fo_sgd": 0, "fo_signsgd_momentum": 1, "fo_muon": 1, "adam": 2}




def lora_model(arch="llama", dtype=torch.float32):
    model, tok = tiny_model(arch, seed=0, dtype=dtype)
    return apply_lora(model, r=2, alpha=4, seed=0), tok


def closure_for(opt_cls, model, tok, params):
    if opt_cls.kind == "forward-mode":
        return functional_loss(model, tok, BATCH, params)
    return loss_closure(model, tok, BATCH, grad=not opt_cls.zero_order)


def test_every_registry_algorithm_has_an_optimizer_and_the_registry_says_where_it_runs():
    assert set(optim.OPTIMIZERS) == set(METHODS)
    assert set(STATE_PER_ENTRY) == set(METHODS)
    assert all(ALGORITHMS[n].batched for n in set(ALGORITHMS) - set(METHODS))  # constrained: synthetic only
    for name, cls in optim.OPTIMIZERS.items():
        assert cls.algorithm == name and f"zotheory.algorithms.{name}" in cls.__doc__
        assert isinstance(ALGORITHMS[name].batched, bool)


# --------------------------------------------------------------------------- on a LoRA model


@pytest.mark.parametrize("method", METHODS)
def test_model_parameters_of_a_lora_model_move_only_the_adapters(method):
    model, tok = lora_model()
    named = dict(model.named_parameters())
    before = {n: bits(p) for n, p in named.items()}
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable) and len(trainable) < len(named)
    cls = optim.OPTIMIZERS[method]
    params = model.named_parameters() if method == "lezo" else model.parameters()
    opt = cls(params, lr=1e-2, **HP[method])
    assert [id(p) for p in opt.params] == [id(p) for n, p in named.items() if n in trainable]
    closure = closure_for(cls, model, tok, opt.params)
    for _ in range(2):
        loss = opt.step(closure)
    assert torch.isfinite(loss)
    changed = {n for n, p in named.items() if not torch.equal(bits(p), before[n])}
    assert changed and changed <= trainable, sorted(changed - trainable)
    n_trainable = sum(p.numel() for n, p in named.items() if n in trainable)
    assert optim.state_numel(opt) == STATE_PER_ENTRY[method] * n_trainable
    assert len(opt.state) == len(trainable)  # no state for frozen tensors


def _kernel_arguments(method: str, hp: dict, lr: float) -> dict:
    cls = optim.OPTIMIZERS[method]
    full = dict(cls(torch.nn.Linear(2, 2).parameters(), lr=lr, **hp).hp)
    full.pop("lr")
    full.pop("layer", None)
    for k in cls.init_hyperparameters:
        full.pop(k)
    return dict(gamma=lr, **full)


@pytest.mark.parametrize("method", METHODS)
def test_optimizer_step_equals_the_kernel_step_bitwise(method):
    model_a, tok = lora_model()
    model_b = copy.deepcopy(model_a)
    cls = optim.OPTIMIZERS[method]
    hp = dict(HP[method])
    opt = cls(model_a.named_parameters(), lr=1e-2, seed=5, **hp)
    names = [n for n, p in model_b.named_parameters() if p.requires_grad]
    params_b = [p for p in model_b.parameters() if p.requires_grad]
    kernel = get_algorithm(method)
    states = kernel.init(params_b, **{k: opt.hp[k] for k in cls.init_hyperparameters})
    args = _kernel_arguments(method, hp, 1e-2)
    if method == "lezo":
        from zotheory.algorithms import lezo

        args["layers"] = lezo.layer_ids(names)
    gen = torch.Generator().manual_seed(5)
    closure_a = closure_for(cls, model_a, tok, opt.params)
    closure_b = closure_for(cls, model_b, tok, params_b)
    for _ in range(3):
        opt.step(closure_a)
        extra = {}
        if cls.kind == "first-order":
            with torch.enable_grad():
                extra["grad"] = list(torch.autograd.grad(closure_b(), params_b, allow_unused=True))
            extra["grad"] = [g if g is not None else torch.zeros_like(p) for g, p in zip(extra["grad"], params_b)]
        with torch.no_grad():
            states = kernel.step(params_b, None if extra else closure_b, states, generator=gen, **args, **extra)
    for p, q in zip(opt.params, params_b):
        assert same_bits(p, q)
    for sa, sb in zip(opt.kernel_states, states):
        for f in dataclasses.fields(sa):
            a, b = getattr(sa, f.name), getattr(sb, f.name)
            if isinstance(a, torch.Tensor) and not f.metadata.get("cache"):
                assert same_bits(a, b), f.name
    assert torch.equal(opt.generator.get_state(), gen.get_state())


def run_estimate(estimate: str, params, closure) -> None:
    """One estimate of the given kind over a model's parameters (also used by tests/test_cuda.py)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if estimate == "coordinates":
            estimators.jaguar_coordinates(params, closure, 0.05, k=4, generator=g)
        elif estimate == "block":
            estimators.jaguar_block(params, closure, 0.05, generator=g)
        elif estimate == "gaussian":
            estimators.gaussian_two_point(params, closure, 0.05, seed=3)
        else:
            estimators.gaussian_two_point(params, closure, 1e-3, seed=3, restore="regenerate")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("estimate", ["coordinates", "block", "gaussian", "regenerate-close"])
def test_estimators_restore_a_models_parameters(estimate, dtype):
    model, tok = tiny_model("llama", seed=0, dtype=dtype)
    params = list(model.parameters())
    before = [bits(p) for p in params]
    closure = loss_closure(model, tok, BATCH)
    moved = []

    def recording():
        moved.append(any(not torch.equal(bits(p), b) for p, b in zip(params, before)))
        value = closure()
        assert value.dtype == torch.float32
        return value

    run_estimate(estimate, params, recording)
    assert any(moved)
    if estimate == "regenerate-close":  # MeZO's walk: close, not bitwise (named, never the default)
        if dtype == torch.float32:
            for p, b in zip(params, before):
                torch.testing.assert_close(p.detach(), b.view(dtype), rtol=0, atol=1e-6)
        return
    assert all(torch.equal(bits(p), b) for p, b in zip(params, before))


# --------------------------------------------------------------------------- list path == single tensor


def make_params(shapes=((3, 4), (5,), (2, 3)), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def weights_for(d: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(d, generator=g) + 0.5, torch.randn(d, generator=g)


def loss_of(x, w, v):
    return (w * x * x).sum() + (v * torch.sin(x)).sum()


def flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


class Oracle:
    def __init__(self, w, v):
        self.w, self.v = w, v

    def value(self, x):
        return loss_of(x.reshape(-1), self.w, self.v)


@pytest.mark.parametrize("k", [1, 3])
def test_jaguar_list_step_equals_the_single_tensor_step_on_the_concatenation(k):
    params = make_params()
    w, v = weights_for(sum(p.numel() for p in params))
    opt = optim.JaguarSignSGD(params, lr=0.01, tau=1e-3, beta=0.8, coords_per_step=k, seed=7)
    x = flat(params).clone()
    state = jaguar_signsgd.init(x)
    gen = torch.Generator().manual_seed(7)
    for _ in range(12):
        opt.step(lambda: loss_of(flat(params), w, v))
        state = jaguar_signsgd.step(x, Oracle(w, v), state, gamma=0.01, beta=0.8, tau=1e-3, generator=gen,
                                    coords_per_step=k)
        assert same_bits(flat(params), x)
        assert same_bits(torch.cat([dense_momentum(s).reshape(-1) for s in opt.kernel_states]), dense_momentum(state))
    assert opt.oracle_calls == 12 * 2 * k and opt.steps == 12


@pytest.mark.parametrize("non_matrix", ["sign", "column"])
def test_jaguar_muon_mixed_ranks_equals_estimator_plus_updates(non_matrix):
    """The list path composed by hand from the estimator, the split and the per-tensor rules."""
    params = make_params([(3, 4), (5,), (2, 2, 2)])
    ref = [p.detach().clone() for p in params]
    d = sum(p.numel() for p in params)
    w, v = weights_for(d)
    opt = optim.JaguarMuon(params, lr=0.02, coords_per_step=d, non_matrix=non_matrix, seed=5)
    gen = torch.Generator().manual_seed(5)

    def matrix(t):
        return t if t.ndim == 2 else t.reshape(t.shape[0], -1) if t.ndim > 2 else t.reshape(-1, 1)

    states = [jaguar_muon.init(matrix(r)) if (r.ndim == 2 or non_matrix == "column") else jaguar_signsgd.init(r)
              for r in ref]
    assert [type(s) for s in opt.kernel_states] == [type(s) for s in states]
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


def test_zo_sgd_list_step_follows_the_formula():
    params = make_params()
    ref = [p.detach().clone() for p in params]
    w, v = weights_for(sum(p.numel() for p in params))
    opt = optim.ZOSGD(params, lr=0.01, tau=1e-3, seed=2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        opt.step(lambda: loss_of(flat(params), w, v))
        zs = generate_directions(ref, draw_seed(gen), "gaussian")
        cat = torch.cat([z.reshape(-1) for z in zs])
        x0 = flat(ref)
        scale = (loss_of(x0 + 1e-3 * cat, w, v) - loss_of(x0 - 1e-3 * cat, w, v)) / (2 * torch.tensor(1e-3))
        for r, z in zip(ref, zs):
            r -= 0.01 * (scale * z)
        assert all(same_bits(p, r) for p, r in zip(params, ref))


def test_jaguar_block_mode_with_reset_moves_only_the_block():
    params = make_params([(10, 10)])
    w, v = weights_for(100)
    opt = optim.JaguarSignSGD(params, lr=0.01, mode="block", block_fraction=0.3, reset_momentum=True, seed=0)
    for _ in range(3):
        before = params[0].detach().clone()
        opt.step(lambda: loss_of(flat(params), w, v))
        assert 0 < int((params[0].detach() != before).sum()) <= 9  # a 3 x 3 block
        assert int(dense_momentum(opt.kernel_states[0]).ne(0).sum()) <= 9


def test_jaguar_moves_exactly_the_coordinates_with_momentum_on_a_model():
    model, tok = tiny_model("opt", seed=0)
    opt = optim.JaguarSignSGD(model.parameters(), lr=1e-2, coords_per_step=16, seed=4)
    params = opt.params
    closure = loss_closure(model, tok, BATCH)
    opt.step(closure)
    m1 = torch.cat([dense_momentum(s).reshape(-1) for s in opt.kernel_states]).clone()
    x1 = flat(params).clone()
    opt.step(closure)
    m2 = torch.cat([dense_momentum(s).reshape(-1) for s in opt.kernel_states])
    assert int(m1.ne(0).sum()) > 0 and int((m2 != m1).sum()) <= 16  # the momentum persists elsewhere
    assert same_bits(flat(params), x1 - (1e-2 * torch.sign(m2)))  # every coordinate with momentum moves
    assert torch.equal(flat(params) != x1, m2 != 0)


# --------------------------------------------------------------------------- torch.optim conventions


def test_two_parameter_groups_move_by_their_own_lr():
    a, b = make_params([(4, 5)], seed=1)[0], make_params([(6,)], seed=2)[0]
    w, v = weights_for(26)
    opt = optim.ZOSignSGD([{"params": [a]}, {"params": [b], "lr": 1e-3}], lr=1e-2, tau=1e-3)
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt.step(lambda: loss_of(torch.cat([a.detach().reshape(-1), b.detach()]), w, v))
    # ZO-SignSGD moves every entry by exactly its lr (sign of a Gaussian direction is never 0)
    torch.testing.assert_close((a.detach() - a0).abs(), torch.full_like(a0, 1e-2), rtol=1e-5, atol=0)
    torch.testing.assert_close((b.detach() - b0).abs(), torch.full_like(b0, 1e-3), rtol=1e-4, atol=0)


def test_estimate_hyperparameters_must_agree_across_groups():
    a, b = make_params([(3,), (4,)])
    with pytest.raises(ValueError, match="tau must be the same in every parameter group"):
        optim.ZOSGD([{"params": [a]}, {"params": [b], "tau": 1e-2}], lr=1e-2)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("edit", [("lr", -1.0), ("lr", 0.0), ("tau", 0.0)])
def test_a_bad_hyperparameter_set_after_construction_raises_before_anything_moves(method, edit):
    name, value = edit
    cls = optim.OPTIMIZERS[method]
    if name not in cls(make_params(), lr=0.1).hp:
        pytest.skip(f"{method} has no {name}")
    params = make_params()
    opt = cls([{"params": params[:1]}, {"params": params[1:], "layer": 0}] if method == "lezo" else params,
              lr=0.1, **({"layer": -1} if method == "lezo" else {}))
    before = [bits(p) for p in params]
    generator = opt.generator.get_state()
    calls = []
    for g in opt.param_groups:
        g[name] = value
    with pytest.raises(ValueError, match=rf"param_groups\[0\]\['{name}'\] must be"):
        opt.step(lambda: calls.append(1) or flat(params).sum())
    assert calls == [] and all(torch.equal(bits(p), b) for p, b in zip(params, before))
    assert torch.equal(opt.generator.get_state(), generator) and opt.steps == 0


def test_frozen_parameters_are_never_perturbed_moved_or_given_state():
    free, frozen = make_params([(4,), (3,)])
    frozen.requires_grad_(False)
    w, v = weights_for(7)
    seen = []

    def closure():
        seen.append(frozen.detach().clone())
        return loss_of(torch.cat([free.detach(), frozen.detach()]), w, v)

    opt = optim.JaguarSignSGD([free, frozen], lr=0.1, coords_per_step=4)
    before = frozen.detach().clone()
    opt.step(closure)
    assert all(torch.equal(s, before) for s in seen) and torch.equal(frozen.detach(), before)
    assert frozen not in opt.state and dense_momentum(opt.kernel_states[0]).numel() == 4
    frozen.requires_grad_(True)  # becomes trainable: gets a state at the next step
    opt.step(closure)
    assert frozen in opt.state


def test_weight_decay_is_mezos_decoupled_form():
    (x,) = make_params([(6,)])
    x0 = x.detach().clone()
    w, v = weights_for(6)
    opt = optim.ZOSGD([x], lr=0.1, tau=1e-3, weight_decay=0.5, seed=3)
    twin_x = torch.nn.Parameter(x0.clone())  # same draws, no decay: it moves by lr * g z
    twin = optim.ZOSGD([twin_x], lr=0.1, tau=1e-3, seed=3)
    opt.step(lambda: loss_of(x.detach(), w, v))
    twin.step(lambda: loss_of(twin_x.detach(), w, v))
    gz = (x0 - twin_x.detach()) / 0.1  # the twin moved by lr * g z
    torch.testing.assert_close(x.detach(), x0 - 0.1 * (gz + 0.5 * x0), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(x.detach(), twin_x.detach())


def test_a_zero_order_closure_that_calls_backward_gets_a_clear_error():
    (x,) = make_params([(3,)])

    def closure():
        loss = (x * x).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match="called backward.*zero-order methods need only the loss"):
        optim.ZOSGD([x], lr=0.1).step(closure)
    with pytest.raises(ValueError, match="needs a closure"):
        optim.ZOSGD([x], lr=0.1).step()
    opt = optim.ZOSGD([x], lr=0.1)
    opt.zero_grad()  # harmless: no gradients are used
    opt.step(lambda: (x * x).sum())
    assert x.grad is None


def test_first_order_step_uses_p_grad_or_differentiates_the_closure():
    a = make_params([(3, 4)], seed=3)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    c = [torch.nn.Parameter(p.detach().clone()) for p in a]
    w, v = weights_for(12)
    oa, ob, oc = (optim.Adam(ps, lr=0.05) for ps in (a, b, c))
    for _ in range(3):
        oa.zero_grad()
        loss_of(a[0].reshape(-1), w, v).backward()
        oa.step()  # torch's convention: gradients in p.grad

        def with_backward():
            ob.zero_grad()
            loss = loss_of(b[0].reshape(-1), w, v)
            loss.backward()
            return loss

        ob.step(with_backward)
        oc.step(lambda: loss_of(c[0].reshape(-1), w, v))  # ours: the optimizer differentiates
    assert same_bits(a[0], b[0]) and same_bits(a[0], c[0])


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_continues_bitwise(method):
    cls = optim.OPTIMIZERS[method]
    params = make_params([(3, 4), (5,)])
    w, v = weights_for(17)

    def closure_for_params(ps):
        if cls.kind == "forward-mode":
            return lambda ts: loss_of(torch.cat([t.reshape(-1) for t in ts]), w, v)
        if cls.kind == "first-order":
            return lambda: loss_of(torch.cat([p.reshape(-1) for p in ps]), w, v)
        return lambda: loss_of(flat(ps), w, v)

    def make(ps, lr, seed):
        groups = [{"params": ps[:1], "layer": 0}, {"params": ps[1:], "layer": 1}] if method == "lezo" else ps
        hp = {"coords_per_step": 2} if method.startswith("jaguar_") and method != "jaguar_signsgd_released" else {}
        return cls(groups, lr=lr, seed=seed, **hp, **({"drop_layers": 1} if method == "lezo" else {}))

    a = make(params, 0.01, 9)
    for _ in range(3):
        a.step(closure_for_params(params))
    saved_sd = copy.deepcopy(a.state_dict())
    saved_x = [p.detach().clone() for p in params]
    for _ in range(3):
        a.step(closure_for_params(params))
    params_b = [torch.nn.Parameter(x.clone()) for x in saved_x]
    b = make(params_b, 0.5, 0)  # lr and seed come from the state
    b.load_state_dict(saved_sd)
    for _ in range(3):
        b.step(closure_for_params(params_b))
    assert all(same_bits(p, q) for p, q in zip(params, params_b))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert (a.steps, a.oracle_calls) == (b.steps, b.oracle_calls)


def test_load_state_dict_keeps_float32_state_for_bfloat16_parameters():
    params = make_params([(3, 4)], dtype=torch.bfloat16)
    opt = optim.JaguarSignSGD(params, lr=0.01, coords_per_step=3)
    opt.step(lambda: flat(params).float().pow(2).sum())
    sd = copy.deepcopy(opt.state_dict())
    other = optim.JaguarSignSGD([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.01, coords_per_step=3)
    other.load_state_dict(sd)
    assert dense_momentum(other.kernel_states[0]).dtype == torch.float32
    assert same_bits(dense_momentum(other.kernel_states[0]), dense_momentum(opt.kernel_states[0]))


def test_load_state_dict_rejects_another_algorithm_or_shape():
    params = make_params([(3, 4)])
    sd = optim.ZOAdaMM(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="algorithm"):
        optim.ZOSGD(params, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="shape"):
        optim.ZOAdaMM(make_params([(4, 3)]), lr=0.1).load_state_dict(sd)


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
    with pytest.raises(ValueError, match="coords_per_step must be <= the number of entries 4"):
        optim.JaguarSignSGD(make_params([(2, 2)]), lr=0.1, coords_per_step=5).step(lambda: 0.0)
    with pytest.raises(ValueError, match="no parameter with requires_grad=True"):
        optim.ZOSGD([torch.zeros(3)], lr=0.1).step(lambda: 0.0)


@pytest.mark.parametrize("method", ["jaguar_signsgd", "zo_sgd", "zo_adamm", "adam"])
def test_non_finite_loss_raises_with_parameters_and_state_untouched(method):
    params = make_params([(3, 4), (5,)])
    before = [bits(p) for p in params]
    cls = optim.OPTIMIZERS[method]
    opt = cls(params, lr=0.1, **({"coords_per_step": 2} if method.startswith("jaguar") else {}))
    with pytest.raises(NonFiniteOracleError):
        opt.step(lambda: (params[0] * float("nan")).sum())
    assert all(torch.equal(bits(p), b) for p, b in zip(params, before)) and opt.steps == 0
    for s in opt.kernel_states:
        for f in dataclasses.fields(s):
            value = getattr(s, f.name)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert not bool(value.ne(0).any())


def test_step_returns_the_mean_of_the_oracle_values_and_schedulers_drive_lr():
    (x,) = make_params([(6,)])
    w, v = weights_for(6)
    values = []

    def closure():
        values.append(loss_of(x.detach(), w, v))
        return values[-1]

    opt = optim.ZOSGD([x], lr=0.1)
    loss = opt.step(closure)
    assert len(values) == 2 and float(loss) == pytest.approx(float(torch.stack(values).mean()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5**t)
    for _ in range(3):
        opt.step(closure)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)
    other = optim.ZOSGD(make_params([(6,)]), lr=1.0)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_the_optimizer_module_imports_no_transformers():
    import subprocess
    import sys

    code = "import sys, zotheory.optim; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_zo_sgd_kernel_list_state_is_one_state_per_tensor():
    params = make_params()
    states = zo_sgd.init(params)
    assert len(states) == 3 and all(isinstance(s, zo_sgd.ZOSGDState) for s in states)
    with pytest.raises(ValueError, match="one state per tensor"):
        zo_sgd.step(params, lambda: 0.0, states[:2], gamma=0.1, tau=1e-3, seed=1)


def test_the_readme_examples_run_verbatim_and_learn(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Using the optimizers in your own code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3  # own loop, Hugging Face + LoRA, Trainer
    monkeypatch.chdir(tmp_path)  # the examples write files
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    opt, model, x, y = scope["opt"], scope["model"], scope["x"], scope["y"]
    assert opt.steps == 200 and opt.oracle_calls == 200 * 16
    torch.manual_seed(0)  # the example's initial model again
    initial = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        start, end = (float(torch.nn.functional.mse_loss(m(x), y)) for m in (initial, model))
    assert end < 0.9 * start  # it learns
    assert same_bits(model[0].weight, initial[0].weight) and model[0].weight not in opt.state  # frozen

    exec(compile(blocks[1], "README.md", "exec"), scope)  # Hugging Face model + peft LoRA
    model, opt = scope["model"], scope["opt"]
    assert opt.steps == 10 and all("lora_" in n for n, p in model.named_parameters() if p in opt.state)
    assert (tmp_path / "zo_sgd.pt").exists()
    exec(compile(blocks[2], "README.md", "exec"), scope)  # Trainer
    assert scope["trainer"].state.global_step == 5
