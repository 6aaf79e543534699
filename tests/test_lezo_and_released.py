"""LeZO and JAGUAR SignSGD's released code: kernels == literal transcriptions.

* LeZO (:mod:`zotheory.algorithms.lezo`) against the float64 loop of
  :mod:`zotheory.reference.lezo` on a list of small tensors, bitwise, step by step: both
  draw the dropped layers with ``sample_coordinates``, the seed with ``torch.randint`` and
  ``z`` with ``generate_directions`` from one generator, and do the same IEEE operations.
* ``jaguar_signsgd_released`` against :mod:`zotheory.reference.jaguar_signsgd_released`, the
  released training step written their way (global ``torch.manual_seed`` + ``randperm``,
  indexing writes into ``p.data`` / ``p.grad``, ``torch.optim.SGD``) on a tiny random-weight
  Llama, full fine-tuning and LoRA.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bitwise import same_bits
from examples import BATCH
from zotheory.algorithms import ALGORITHMS, get_algorithm, jaguar_signsgd_released, lezo, zo_sgd
from zotheory.estimators import _block_count
from zotheory.reference import jaguar_signsgd_released as ref_released
from zotheory.reference import lezo as ref_lezo

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

# --------------------------------------------------------------------------- LeZO

SHAPES = [(3, 4), (5,), (2, 3), (4,)]
LAYERS = [0, 0, 1, -1]  # two tensors in block 0, one in block 1, one always active


def make_f(seed: int):
    """f(xs, t) = sum over tensors of a/2 x^2 + b (1 - cos(w x)) + <xi^t, x> (non-convex, closed form)."""
    g = torch.Generator().manual_seed(seed)
    xis = [torch.randn((20, *s), generator=g, dtype=torch.float64) * 0.1 for s in SHAPES]

    def f(xs, t):
        total = torch.zeros((), dtype=torch.float64)
        for x, xi in zip(xs, xis):
            total = total + (0.5 * x * x + 0.7 * (1 - torch.cos(3.0 * x)) + xi[t] * x).sum()
        return total

    return f


def start(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


@pytest.mark.parametrize("drop_layers, gamma, weight_decay", [
    (0, 0.02, 0.0),
    (1, 0.02, 0.0),
    (1, [0.02, 0.01, 0.03, 0.02], [0.0, 0.1, 0.05, 0.2]),
])
def test_lezo_equals_the_literal_reference_bitwise(drop_layers, gamma, weight_decay):
    T, tau = 12, 2.0**-10
    f = make_f(1)
    x0 = start()
    ref_xs, ref_dropped = ref_lezo.run(f, x0, T, gamma=gamma, tau=tau, layers=LAYERS, drop_layers=drop_layers,
                                       generator=torch.Generator().manual_seed(3), weight_decay=weight_decay)
    xs = [t.clone() for t in x0]
    states = lezo.init(xs)
    gen = torch.Generator().manual_seed(3)
    for t in range(T):
        before = [x.clone() for x in xs]
        states = lezo.step(xs, lambda: f(xs, t), states, gamma=gamma, tau=tau, layers=LAYERS,
                           drop_layers=drop_layers, generator=gen, weight_decay=weight_decay)
        for i, x in enumerate(xs):
            expected = torch.tensor(ref_xs[t + 1][i], dtype=torch.float64).reshape(SHAPES[i])
            assert same_bits(x, expected), f"tensor {i} differs at step {t}"
            if LAYERS[i] in ref_dropped[t]:  # dropped: not perturbed, not moved
                assert same_bits(x, before[i]), f"dropped tensor {i} moved at step {t}"
            else:
                assert not torch.equal(x, before[i]), f"active tensor {i} did not move at step {t}"
        assert len(ref_dropped[t]) == drop_layers
    assert all(s.step == T for s in states)  # every state counts steps, dropped or not
    if drop_layers:
        assert {tuple(d) for d in ref_dropped} == {(0,), (1,)}  # both blocks were dropped at some step


def test_lezo_explicit_draws_skip_the_generator_and_leave_dropped_tensors_alone():
    f = make_f(2)
    xs = start(4)
    before = [x.clone() for x in xs]
    gen = torch.Generator().manual_seed(9)
    gen_state = gen.get_state()
    states = lezo.step(xs, lambda: f(xs, 0), lezo.init(xs), gamma=0.05, tau=1e-3, layers=LAYERS, drop_layers=1,
                       generator=gen, dropped=[0], seed=123)
    assert torch.equal(gen.get_state(), gen_state)  # nothing drawn
    assert same_bits(xs[0], before[0]) and same_bits(xs[1], before[1])  # block 0 dropped
    assert not torch.equal(xs[2], before[2]) and not torch.equal(xs[3], before[3])
    assert [s.step for s in states] == [1, 1, 1, 1]
    # the explicit seed is the seed of a ZO-SGD step over the active tensors
    ys = [x.clone() for x in before]
    active = [ys[2], ys[3]]
    zo_sgd.step(active, lambda: f(ys, 0), zo_sgd.init(active), gamma=0.05, tau=1e-3, seed=123)
    assert all(same_bits(a, b) for a, b in zip(xs, ys))


def test_lezo_without_dropped_layers_is_zo_sgd_bitwise():
    f = make_f(3)
    xs, ys = start(5), start(5)
    sx, sy = lezo.init(xs), zo_sgd.init(ys)
    gx, gy = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for t in range(3):
        sx = lezo.step(xs, lambda: f(xs, t), sx, gamma=0.03, tau=1e-3, layers=LAYERS, drop_layers=0, generator=gx)
        sy = zo_sgd.step(ys, lambda: f(ys, t), sy, gamma=0.03, tau=1e-3, generator=gy)
    assert all(same_bits(a, b) for a, b in zip(xs, ys))


def test_lezo_rejects_bad_input():
    f = make_f(4)
    xs = start()
    st = lezo.init(xs)
    kw = dict(gamma=0.01, tau=1e-3, generator=torch.Generator().manual_seed(0))
    for bad in (2, -1, 1.0, True, None):
        with pytest.raises(ValueError, match=r"drop_layers must be an int in \[0, 1\]"):
            lezo.step(xs, lambda: f(xs, 0), st, layers=LAYERS, drop_layers=bad, **kw)
    with pytest.raises(ValueError, match=r"layers must hold one layer id per tensor \(4\), got 3"):
        lezo.step(xs, lambda: f(xs, 0), st, layers=[0, 0, 1], drop_layers=1, **kw)
    with pytest.raises(ValueError, match=r"layers\[1\] must be an int >= -1"):
        lezo.step(xs, lambda: f(xs, 0), st, layers=[0, -2, 1, -1], drop_layers=1, **kw)
    with pytest.raises(ValueError, match="dropped must hold drop_layers=1 distinct layer ids"):
        lezo.step(xs, lambda: f(xs, 0), st, layers=LAYERS, drop_layers=1, dropped=[5], **kw)
    with pytest.raises(ValueError, match="LeZO needs a list of tensors with layer ids"):
        lezo.step(xs[0], lambda: f(xs, 0), st[0], layers=[0], drop_layers=0, **kw)
    with pytest.raises(ValueError, match="LeZO needs a list of tensors with layer ids"):
        lezo.init(xs[0])
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        lezo.step(xs, lambda: f(xs, 0), st, gamma=0.01, tau=1e-3, layers=LAYERS, drop_layers=1)
    # no block at all: only drop_layers = 0 (plain ZO-SGD on the always-active tensors)
    lezo.step(xs, lambda: f(xs, 0), st, layers=[-1] * 4, drop_layers=0, **kw)
    with pytest.raises(ValueError, match=r"drop_layers must be an int in \[0, 0\]"):
        lezo.step(xs, lambda: f(xs, 0), st, layers=[-1] * 4, drop_layers=1, **kw)


def test_layer_ids_of_common_architectures():
    names = [
        "model.embed_tokens.weight",                                              # Llama
        "model.layers.3.self_attn.q_proj.weight",
        "model.norm.weight",
        "model.decoder.layers.11.fc1.bias",                                       # OPT
        "model.decoder.embed_positions.weight",
        "roberta.encoder.layer.7.attention.self.query.weight",                     # RoBERTa
        "transformer.h.2.mlp.c_fc.weight",                                        # GPT-2
        "transformer.wte.weight",
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight",  # peft prefix
        "layers.5.weight",                                                        # no prefix
        "blocks.1.attn.weight",
        "lm_head.weight",
        "model.layers_norm.weight",
    ]
    assert lezo.layer_ids(names) == [-1, 3, -1, 11, -1, 7, 2, -1, 0, 5, 1, -1, -1]
    with pytest.raises(ValueError):
        lezo.layer_ids("model.layers.0.weight")


# --------------------------------------------------------------------------- JAGUAR SignSGD, released code


def test_registry_entries():
    for name in ("lezo", "jaguar_signsgd_released"):
        info = ALGORITHMS[name]
        assert info.batched is False and info.oracle == "zero-order" and info.calls({}) == 2
        assert get_algorithm(name).step is info.module.step
    assert ALGORITHMS["jaguar_signsgd_released"].status == "named variant"
    assert ALGORITHMS["lezo"].status == "published definition (interpretation)"


def test_block_count_is_the_released_ten_percent():
    assert all(_block_count(n, 0.1) == max(1, n // 10) for n in range(1, 100_001))


def test_released_kernel_rejects_bad_input():
    xs = [torch.zeros(3, 4), torch.zeros(5)]
    st = jaguar_signsgd_released.init(xs)
    kw = dict(gamma=0.01, tau=1e-3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs a list of tensors"):
        jaguar_signsgd_released.step(xs[0], lambda: xs[0].sum(), st[0], **kw)
    with pytest.raises(ValueError, match="needs a list of tensors"):
        jaguar_signsgd_released.init(xs[0])
    with pytest.raises(ValueError, match="momentum"):
        jaguar_signsgd_released.step(xs, lambda: xs[0].sum(), st, momentum=1.0, **kw)
    with pytest.raises(ValueError, match="beta"):
        jaguar_signsgd_released.step(xs, lambda: xs[0].sum(), st, beta=-0.1, **kw)
    with pytest.raises(ValueError, match="block_fraction"):
        jaguar_signsgd_released.step(xs, lambda: xs[0].sum(), st, block_fraction=0.0, **kw)
    assert all(torch.count_nonzero(x) == 0 for x in xs)  # nothing moved


def test_released_kernel_on_small_tensors():
    """Block sizes, the reset (only this step's block moves at step 1 with momentum 0), rank > 2 and 0-d."""
    xs = [torch.randn(20, 30, generator=torch.Generator().manual_seed(0)), torch.zeros(25), torch.zeros(4, 2, 5),
          torch.zeros(())]
    target = [torch.ones_like(x) for x in xs]

    def loss():
        return sum(((x - c) ** 2).sum() for x, c in zip(xs, target))

    st = jaguar_signsgd_released.init(xs)
    before = [x.clone() for x in xs]
    st = jaguar_signsgd_released.step(xs, loss, st, gamma=0.5, tau=1e-3, momentum=0.0,
                                      generator=torch.Generator().manual_seed(1))
    moved = [int(torch.count_nonzero(x != b)) for x, b in zip(xs, before)]
    assert moved == [2 * 3, 2, 1 * 1, 1]  # 10% of rows x 10% of columns; 10% of 25; (4, 10) view; the entry
    assert [s.step for s in st] == [1] * 4 and all(s.sgd_buffer is not None for s in st)
    for _ in range(3):
        st = jaguar_signsgd_released.step(xs, loss, st, gamma=0.5, tau=1e-3, momentum=0.0,
                                          generator=torch.Generator().manual_seed(1))
    # same block each time (same seed), momentum 0 and the reset: each step is the sign of this block only
    for s in st:
        assert int(torch.count_nonzero(s.momentum)) == int(torch.count_nonzero(s.sgd_buffer))


@pytest.fixture(scope="module")
def llm():
    pytest.importorskip("transformers")
    from zotheory.llm.models import named_trainable_parameters, tiny_model, trainable_parameters
    from zotheory.llm.scoring import loss_closure

    return dict(tiny_model=tiny_model, named=named_trainable_parameters, params=trainable_parameters,
                closure=loss_closure)




def _global_indices(named, blocks) -> torch.Tensor:
    """The released code's blocks as sorted global flat indices over the list (the kernel's form)."""
    out, offset = [], 0
    for name, p in named:
        b = blocks[name]
        if p.ndim == 1:
            local = b
        else:
            rows, cols = b
            local = (rows[:, None] * p.shape[1] + cols[None, :]).reshape(-1)
        out.append(local.sort().values + offset)
        offset += p.numel()
    return torch.cat(out)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_released_kernel_equals_the_transcription_of_the_released_code(llm, lora):
    model_a, tok = llm["tiny_model"]("llama", seed=0)
    if lora:
        pytest.importorskip("peft")
        from zotheory.llm.models import apply_lora

        model_a = apply_lora(model_a, r=8, alpha=16, seed=0)
    model_b = copy.deepcopy(model_a)
    named_b = llm["named"](model_b)
    params_a = llm["params"](model_a)
    assert [p.shape for p in params_a] == [p.shape for _, p in named_b]
    if lora:
        assert all("lora_" in n for n, _ in named_b)
    closure_a, closure_b = llm["closure"](model_a, tok, BATCH), llm["closure"](model_b, tok, BATCH)
    lr, tau, beta, momentum, T = 1e-2, 1e-3, 0.9, 0.9, 4
    released = ref_released.ReleasedJaguarSignSGD(named_b, lr=lr, momentum=momentum, tau=tau, beta=beta)
    states = jaguar_signsgd_released.init(params_a)
    initial = [p.detach().clone() for p in params_a]
    # The released code reseeds the GLOBAL RNG every step with torch.manual_seed(np.random.randint(1e9)).
    # We give each step the same kind of seed: the transcription calls torch.manual_seed(seed) as the
    # released code does, and our kernel gets a fresh torch.Generator().manual_seed(seed), which is the
    # global CPU generator's state after torch.manual_seed(seed): both randperm streams start alike.
    seeds = torch.randint(0, 10**9, (T,), generator=torch.Generator().manual_seed(7)).tolist()
    with torch.random.fork_rng(devices=[]):  # the transcription's global reseeding does not leak
        for t, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(seed)
            indices = jaguar_signsgd_released.draw_block(params_a, 0.1, torch.Generator().manual_seed(seed))
            with torch.no_grad():
                states = jaguar_signsgd_released.step(params_a, closure_a, states, gamma=lr, tau=tau, beta=beta,
                                                      momentum=momentum, generator=gen)
            released.step(closure_b, seed)
            assert torch.equal(indices, _global_indices(named_b, released.last_blocks)), f"blocks differ at {t}"
            for i, ((name, p), s, buf) in enumerate(zip(named_b, states, released.momentum_buffers())):
                assert same_bits(torch.sign(s.momentum), p.grad), f"direction of {name} differs at step {t}"
                assert int(torch.count_nonzero(p.grad)) == max(1, p.shape[0] // 10) * (
                    max(1, p.shape[1] // 10) if p.ndim == 2 else 1)
                assert same_bits(s.sgd_buffer, buf), f"SGD momentum buffer of {name} differs at step {t}"
                # torch's param.add_(buf, alpha=-lr) fuses the multiply-add on the CPU (one rounding);
                # our move is x - fl(lr * buf) (two): the parameters may differ by an ulp per step,
                # so the bound is (t + 1) ulps of the largest |x| and |lr * buf| of the tensor.
                a = params_a[i].detach()
                if t == 0:  # b = d in {-1, 0, +1}: lr * b is exact, fused or not, so the first step is bitwise
                    assert same_bits(a, p.detach()), f"{name} differs after the first step"
                scale = max(float(a.abs().max()), lr * float(buf.abs().max()))
                atol = (t + 1) * torch.finfo(torch.float32).eps * scale
                torch.testing.assert_close(a, p.detach(), rtol=0, atol=atol)
    assert all(s.step == T for s in states)
    assert all(not torch.equal(a, b) for a, b in zip(params_a, initial))  # every tensor moved
