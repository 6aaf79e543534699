"""Shared-prefix forwards (zotheory.llm.prefix) and the estimators' perturbation hint.

* ``estimators.current_perturbation()`` names what each oracle call moves (tensors, indices,
  one session per estimator call) and is ``None`` outside the estimators' calls.
* Exact: every loss an estimator sees is bitwise the plain forward's, for tiny Llama, OPT and
  RoBERTa, full fine-tuning and LoRA, JAGUAR k = 1 and k > 1, LeZO; and whole training runs
  end with bitwise identical parameters with and without sharing.
* It skips work: the blocks below the lowest perturbed one run once per estimator call
  (counted by hooks), and the embedding rows of absent tokens count as "after the blocks".
* It falls back: an unknown model type runs plain forwards and warns once; the switch and the
  ``ZOTHEORY_SHARED_PREFIX=0`` opt-out give plain forwards.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from bitwise import same_bits
from examples import BATCH
from zotheory import estimators, optim

pytest.importorskip("transformers")
pytest.importorskip("peft")

from zotheory.llm import prefix  # noqa: E402
from zotheory.llm.models import apply_lora, named_trainable_parameters, tiny_model, trainable_parameters  # noqa: E402
from zotheory.llm.scoring import loss_closure  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]

LAYERS = 4


def make(arch: str, lora: bool):
    model, tok = tiny_model(arch, seed=0, num_layers=LAYERS)
    if lora:
        model = apply_lora(model, r=2, alpha=4, seed=0)
    return model, tok


def recording(closure):
    seen = []

    def c():
        v = closure()
        seen.append(v)
        return v

    return c, seen


def blocks_of(model):
    return prefix.plan_for(model).blocks


# --------------------------------------------------------------------------- the hint


def test_perturbation_hint_names_the_moved_tensors_and_one_session_per_estimator_call():
    a, b = torch.zeros(3), torch.zeros(2, 2)
    seen = []

    def closure():
        seen.append(estimators.current_perturbation())
        return a.sum() + b.sum()

    assert estimators.current_perturbation() is None
    estimators.jaguar_coordinates([a, b], closure, 0.1, indices=torch.tensor([4, 0]))
    assert len(seen) == 4 and estimators.current_perturbation() is None
    assert all(p.session is seen[0].session for p in seen)
    assert seen[0].tensors[0] is b and seen[0].indices[0].tolist() == [1]  # global 4 = b's entry 1
    assert seen[2].tensors[0] is a and seen[2].indices[0].tolist() == [0]
    estimators.gaussian_two_point([a, b], closure, 0.1, seed=3)
    assert seen[4].session is not seen[0].session and seen[4].session is seen[5].session
    assert seen[4].tensors == (a, b) and seen[4].indices == (None, None)
    estimators.forward_difference([a, b], closure, 0.1, seed=3)
    assert seen[6].tensors == () and seen[7].tensors == (a, b)  # f(x) is the unperturbed point
    with pytest.raises(estimators.NonFiniteOracleError):
        estimators.jaguar_coordinates([a], lambda: torch.tensor(float("nan")), 0.1, indices=torch.tensor([0]))
    assert estimators.current_perturbation() is None  # reset after an error too


# --------------------------------------------------------------------------- exact losses


@pytest.mark.parametrize("arch", ["llama", "opt", "roberta"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("k", [1, 6])
def test_every_oracle_value_is_bitwise_the_plain_forwards(arch, lora, k):
    model, tok = make(arch, lora)
    params = trainable_parameters(model)
    values = {}
    for shared in (False, True):
        closure = loss_closure(model, tok, BATCH, loss="classification", shared_prefix=shared)
        c, seen = recording(closure)
        g = torch.Generator().manual_seed(11)
        for _ in range(6):  # six estimator calls (sessions) of k coordinates each
            estimators.jaguar_coordinates(params, c, 1e-2, k=k, generator=g)
        values[shared] = torch.stack(seen)
        if shared:
            assert closure.shared_prefix.calls["shared"] > 0  # the sharing was exercised
    assert torch.equal(values[True], values[False])
    assert not torch.equal(values[True][0::2], values[True][1::2])  # f+ != f- somewhere: a real test


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_lezo_losses_are_bitwise_the_plain_forwards(arch):
    original, tok = make(arch, lora=True)
    values = {}
    for shared in (False, True):
        model = copy.deepcopy(original)  # the steps move the weights: both sides start alike
        opt = optim.make_optimizer("lezo", named_trainable_parameters(model), lr=1e-2, tau=1e-2,
                                   drop_layers=LAYERS - 1)
        closure = loss_closure(model, tok, BATCH, loss="classification", shared_prefix=shared)
        c, seen = recording(closure)
        for _ in range(6):
            opt.step(c)
        values[shared] = torch.stack(seen)
        if shared:
            assert closure.shared_prefix.calls["shared"] > 0
    assert torch.equal(values[True], values[False])


def test_chunked_closure_keeps_a_prefix_per_chunk():
    model, tok = make("llama", lora=True)
    params = trainable_parameters(model)
    values = {}
    for shared in (False, True):
        closure = loss_closure(model, tok, BATCH, loss="nll", batch_size=1, shared_prefix=shared)
        c, seen = recording(closure)
        estimators.jaguar_coordinates(params, c, 1e-2, k=8, generator=torch.Generator().manual_seed(2))
        values[shared] = torch.stack(seen)
    assert torch.equal(values[True], values[False])


# --------------------------------------------------------------------------- whole runs


def _train(model, tok, method, hp, shared, steps=5):
    named = [(n, p) for n, p in named_trainable_parameters(model)]
    opt = optim.make_optimizer(method, named if method == "lezo" else [p for _, p in named], **hp)
    for t in range(steps):
        batch = BATCH[t % len(BATCH):] + BATCH[: t % len(BATCH)]  # a new batch (and closure) each step
        opt.step(loss_closure(model, tok, batch, loss="classification", shared_prefix=shared))
        # the same closure again: a prefix kept from the previous step would be stale now
    closure = loss_closure(model, tok, BATCH, loss="classification", shared_prefix=shared)
    for _ in range(3):
        opt.step(closure)
    return [p.detach().clone() for _, p in named]


@pytest.mark.parametrize("arch,lora,method,hp", [
    ("llama", True, "jaguar_signsgd", dict(lr=1e-2, tau=1e-2, coords_per_step=8)),
    ("llama", False, "jaguar_signsgd", dict(lr=1e-2, tau=1e-2, coords_per_step=1)),
    ("opt", True, "jaguar_signsgd", dict(lr=1e-2, tau=1e-2, coords_per_step=1)),
    ("opt", False, "jaguar_muon", dict(lr=1e-2, tau=1e-2, coords_per_step=4)),
    ("llama", True, "lezo", dict(lr=1e-2, tau=1e-2, drop_layers=LAYERS - 1)),
])
def test_training_runs_end_bitwise_equal_with_and_without_sharing(arch, lora, method, hp):
    model, tok = make(arch, lora)
    twin = copy.deepcopy(model)
    before = [p.detach().clone() for p in trainable_parameters(model)]
    shared = _train(model, tok, method, hp, True)
    plain = _train(twin, tok, method, hp, False)
    assert all(same_bits(a, b) for a, b in zip(shared, plain))
    assert any(not torch.equal(a, b) for a, b in zip(shared, before))  # the run moved the weights


# --------------------------------------------------------------------------- it skips work


def _count_block_calls(model):
    counts = [0] * LAYERS
    for i, blk in enumerate(blocks_of(model)):
        blk.register_forward_pre_hook(lambda *a, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def test_blocks_below_the_lowest_perturbed_one_run_once_per_estimator_call():
    model, tok = make("llama", lora=True)
    counts = _count_block_calls(model)
    named = named_trainable_parameters(model)
    numels = [p.numel() for _, p in named]
    last = next(i for i, (n, _) in enumerate(named) if f"layers.{LAYERS - 1}." in n)
    idx = torch.tensor([sum(numels[:last]) + j for j in range(3)])  # three coordinates in the last block
    closure = loss_closure(model, tok, BATCH, loss="classification")
    estimators.jaguar_coordinates([p for _, p in named], closure, 1e-2, indices=idx)
    # 6 forwards: blocks 0..L-2 once (the first call), block L-1 every time
    assert counts == [1] * (LAYERS - 1) + [6]
    estimators.jaguar_coordinates([p for _, p in named], closure, 1e-2, indices=idx)
    assert counts == [2] * (LAYERS - 1) + [12]  # a new estimator call recomputes the prefix
    counts[:] = [0] * LAYERS
    with torch.no_grad():
        closure()  # outside an estimator: the plain forward
    assert counts == [1] * LAYERS


def test_embedding_rows_of_absent_tokens_count_as_after_the_blocks():
    model, tok = make("llama", lora=False)  # tied embeddings: the row still changes the head
    plan = prefix.plan_for(model)
    emb = model.model.embed_tokens.weight
    ids = torch.tensor([[5, 6, 7]])
    hidden = emb.shape[1]

    def low(rows, given=True):
        idx = torch.tensor([r * hidden + 1 for r in rows]) if given else None
        return plan.lowest_block(estimators.Perturbation(object(), (emb.detach(),), (idx,)), ids)

    assert low([9]) == LAYERS  # absent token: no block input changes
    assert low([6]) == -1 and low([9, 7]) == -1  # a present token changes the embedding output
    assert low([9], given=False) == -1  # unknown entries: no sharing
    norm = model.model.layers[2].input_layernorm.weight
    assert plan.lowest_block(estimators.Perturbation(object(), (norm.detach(),), (None,)), ids) == 2
    stranger = torch.zeros(3)
    assert plan.lowest_block(estimators.Perturbation(object(), (stranger,), (None,)), ids) == -1


# --------------------------------------------------------------------------- fallbacks and the switch


def test_unknown_model_falls_back_to_plain_forwards_and_warns_once(caplog):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = tiny_model("llama")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128)).eval()
    prefix._WARNED.discard("gpt2")
    params = trainable_parameters(model)
    values = {}
    with caplog.at_level(logging.WARNING, logger="zotheory.llm.prefix"):
        for shared in (False, True, True):
            closure = loss_closure(model, tok, BATCH, loss="classification", shared_prefix=shared)
            c, seen = recording(closure)
            estimators.jaguar_coordinates(params, c, 1e-2, k=3, generator=torch.Generator().manual_seed(0))
            values[shared] = torch.stack(seen)
            if shared:
                assert closure.shared_prefix.calls["shared"] == 0
    assert torch.equal(values[True], values[False])
    warnings = [r for r in caplog.records if "shared-prefix" in r.getMessage()]
    assert len(warnings) == 1 and "gpt2" in warnings[0].getMessage()


def test_switch_and_environment_opt_out(monkeypatch):
    model, tok = make("llama", lora=True)
    assert loss_closure(model, tok, BATCH).shared_prefix is not None  # on by default
    assert loss_closure(model, tok, BATCH, shared_prefix=False).shared_prefix is None
    assert loss_closure(model, tok, BATCH, grad=True).shared_prefix is None  # first-order: plain
    monkeypatch.setenv("ZOTHEORY_SHARED_PREFIX", "0")
    assert loss_closure(model, tok, BATCH).shared_prefix is None
    assert loss_closure(model, tok, BATCH, shared_prefix=True).shared_prefix is not None


def test_the_block_list_is_restored_after_a_failing_forward():
    model, tok = make("opt", lora=False)
    blocks = blocks_of(model)
    params = trainable_parameters(model)
    closure = loss_closure(model, tok, BATCH, loss="classification")
    calls = [0]

    def flaky():
        calls[0] += 1
        if calls[0] == 2:  # the second call runs from a cached prefix
            blocks[-1].register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        return closure()

    last = blocks[-1].fc1.weight
    offset = sum(p.numel() for p in params[: next(i for i, p in enumerate(params) if p is last)])
    with pytest.raises(RuntimeError, match="boom"):
        estimators.jaguar_coordinates(params, flaky, 1e-2, indices=torch.tensor([offset]))
    assert model.model.decoder.layers is blocks and len(model.model.decoder.layers) == LAYERS
    assert all(not b._forward_pre_hooks for b in blocks)


def test_shared_prefix_benchmark_quick_rows():
    from zotheory.benchmarks import llm_step

    df = llm_step.run_shared(quick=True, progress=False, modes=("lora",), cases=llm_step.SHARED_CASES[:2],
                             reps=1, warmup=0, steps={"k=1": 2}, samples=50)
    assert list(df.columns) == list(llm_step.SHARED_COLUMNS) and len(df) == 2
    for col in ("shared_forwards_per_step", "plain_forwards_per_step", "blocks_forwards_per_step",
                "expected_forwards_per_step"):
        assert (df[col] > 0).all(), col
    # the blocks a step ran never exceed the plain 2k forwards' blocks
    assert (df["blocks_forwards_per_step"] <= df["n_forwards"]).all()
    assert (df["expected_forwards_per_step"] <= df["n_forwards"]).all()
