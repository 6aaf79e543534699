"""The CPU guarantees that matter most, re-checked on a CUDA device (skipped without one).

Run on a GPU machine with ``python -m pytest tests/test_cuda.py``. What is checked: the
in-place perturbation restores parameters bitwise on the GPU in fp32/bf16/fp16; an optimizer
shell equals the direct kernel call on the GPU; a fine-tuning run on the GPU is repeatable
(same seed -> identical logs and weights) and resumes bitwise from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from test_llm_optim import (
    BATCH,
    Oracle,
    bits,
    flat,
    loss_of,
    make_params,
    run_estimate,
    same_bits,
    weights_for,
)
from test_llm_train import TIMING, ToyTask, _assert_same_state, _checkpoint, config
from zotheory import optim
from zotheory.llm.models import tiny_model, trainable_parameters
from zotheory.llm.scoring import loss_closure
from zotheory.llm.train import train

from zotheory.algorithms import jaguar_signsgd, zo_adamm, zo_muon, zo_sgd

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
]


def _single(shape=(4, 5), seed=0):
    (x,) = make_params([shape], seed=seed)
    w, v = weights_for(x.numel())
    return x, w, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("estimate", ["coordinates", "block", "gaussian"])
def test_estimate_restores_parameters_bitwise_on_cuda(estimate, dtype):
    model, tok = tiny_model("llama", seed=0, dtype=dtype, device="cuda")
    params = trainable_parameters(model)
    assert all(p.is_cuda for p in params)
    before = [bits(p) for p in params]
    closure = loss_closure(model, tok, BATCH)
    run_estimate(estimate, params, closure)
    assert all(torch.equal(bits(p), b) for p, b in zip(params, before))
    opt = optim.make_optimizer("zo_sgd", params, lr=1e-3, tau=0.05)
    opt.step(closure)
    assert any(not torch.equal(bits(p), b) for p, b in zip(params, before))


@pytest.mark.parametrize("k", [1, 3])
def test_jaguar_signsgd_shell_equals_the_kernel_on_cuda(k):
    params = [torch.nn.Parameter(p.detach().cuda()) for p in make_params()]
    d = sum(p.numel() for p in params)
    w, v = (t.cuda() for t in weights_for(d))
    opt = optim.JaguarSignSGD(params, lr=0.01, tau=1e-3, beta=0.8, coords_per_step=k, seed=7)
    x = flat(params).clone()
    state = jaguar_signsgd.init(x)
    gen = torch.Generator().manual_seed(7)
    for _ in range(12):
        opt.step(lambda: loss_of(flat(params), w, v))
        state = jaguar_signsgd.step(x, Oracle(w, v), state, gamma=0.01, beta=0.8, tau=1e-3, generator=gen,
                                    coords_per_step=k)
        assert same_bits(flat(params), x)


@pytest.mark.parametrize("method, kernel", [("zo_sgd", zo_sgd), ("zo_adamm", zo_adamm), ("zo_muon", zo_muon)])
def test_gaussian_shells_equal_the_kernels_on_cuda(method, kernel):
    W, w, v = (t.detach().cuda() for t in _single())
    opt = optim.make_optimizer(method, [W], lr=0.01, tau=1e-2, seed=21)
    x = W.detach().clone()
    state = kernel.init(x)
    gen = torch.Generator().manual_seed(21)
    for _ in range(6):
        opt.step(lambda: loss_of(W.detach().reshape(-1), w, v))
        state = kernel.step(x, Oracle(w, v), state, gamma=0.01, tau=1e-2, generator=gen)
        assert same_bits(W, x)


@pytest.mark.parametrize("method, lora", [("jaguar_signsgd", True), ("zo_sgd", False), ("adam", True)])
def test_finetuning_on_cuda_repeats_and_resumes_bitwise(tmp_path, method, lora):
    kw = {"method": method, "lora": lora, "model": "tiny-llama", "steps": 7, "eval_every": 2, "checkpoint_every": 3,
              "train_examples": 10, "lr": 1e-2, "device": "cuda"}
    full = train(config(tmp_path / "a", **kw), task=ToyTask())
    again = train(config(tmp_path / "c", **kw), task=ToyTask())
    _assert_same_state(_checkpoint(full), _checkpoint(again))
    part = config(tmp_path / "b", **kw)
    out = train(part, task=ToyTask(), stop_after=4)
    train(dataclasses.replace(part, resume=True), task=ToyTask())
    _assert_same_state(_checkpoint(full), _checkpoint(out))
    for other in (again, out):
        a = pd.read_parquet(full / "log.parquet").drop(columns=TIMING)
        b = pd.read_parquet(other / "log.parquet").drop(columns=TIMING)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert json.loads((full / "result.json").read_text())["device"].startswith("cuda")
