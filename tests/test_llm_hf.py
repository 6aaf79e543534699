"""zotheory.llm.hf.ZOTrainer: zotheory optimizers inside Hugging Face Trainer (no Trainer copy).

A tiny random-weight Llama with peft LoRA, Trainer's own scheduler, logging and checkpoints:
a run resumed from a checkpoint equals the uninterrupted run bitwise; frozen weights never
move; forward passes are logged; first-order optimizers take Trainer's usual path.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import TrainingArguments, default_data_collator  # noqa: E402

from bitwise import bits, same_bits  # noqa: E402
from zotheory import optim  # noqa: E402
from zotheory.llm.hf import ZOTrainer  # noqa: E402
from zotheory.llm.models import apply_lora, tiny_model  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]


class Tokens(torch.utils.data.Dataset):
    """Fixed random token sequences; causal LM loss on every token."""

    def __init__(self, n: int = 24, length: int = 12, vocab: int = 300) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def lora_model():
    model, _ = tiny_model("llama", seed=0)
    return apply_lora(model, r=2, alpha=4, seed=0)


def make_trainer(out, model, opt, **kw):
    args = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=6, save_strategy="steps",
                save_steps=3, logging_steps=1, report_to="none", use_cpu=True, seed=0, data_seed=0,
                dataloader_num_workers=0, disable_tqdm=True)
    args.update(kw)
    return ZOTrainer(model=model, args=TrainingArguments(**args), train_dataset=Tokens(),
                     data_collator=default_data_collator, optimizers=(opt, None))


@pytest.mark.parametrize("method", ["zo_sgd", "jaguar_signsgd"])
def test_trainer_run_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path, method):
    hp = {"coords_per_step": 8} if method == "jaguar_signsgd" else {}
    model = lora_model()
    frozen = {n: bits(p) for n, p in model.named_parameters() if not p.requires_grad}
    opt = optim.OPTIMIZERS[method](model.parameters(), lr=1e-2, tau=1e-3, seed=3, **hp)
    trainer = make_trainer(tmp_path / "a", model, opt)
    trainer.train()
    full = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.equal(bits(p), frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(full[n], p) for n, p in lora_model().named_parameters() if "lora_" in n)
    history = trainer.state.log_history
    steps = [h for h in history if "loss" in h]
    assert [h["forward_passes"] for h in steps] == [opt.oracle_calls // 6 * (i + 1) for i in range(6)]
    lrs = [h["learning_rate"] for h in steps]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1] > 0  # Trainer's linear schedule drove lr

    again = lora_model()
    opt2 = optim.OPTIMIZERS[method](again.parameters(), lr=1e-2, tau=1e-3, seed=99, **hp)  # seed comes from the state
    make_trainer(tmp_path / "b", again, opt2).train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    for n, p in again.named_parameters():
        assert same_bits(p, full[n]), n
    assert torch.equal(opt2.generator.get_state(), opt.generator.get_state())
    assert (opt2.steps, opt2.oracle_calls) == (opt.steps, opt.oracle_calls)
    saved = json.loads((tmp_path / "a" / "checkpoint-6" / "trainer_state.json").read_text())
    assert saved["global_step"] == 6


def test_first_order_optimizers_take_trainers_usual_path(tmp_path):
    model = lora_model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    make_trainer(tmp_path, model, opt, max_steps=2, save_strategy="no").train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert opt.steps == 2


def test_forward_grad_runs_under_the_trainer(tmp_path):
    model = lora_model()
    opt = optim.ForwardGrad(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    make_trainer(tmp_path, model, opt, max_steps=2, save_strategy="no").train()
    assert opt.steps == 2 and opt.oracle_calls == 2
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("bad, match", [
    (dict(gradient_accumulation_steps=2), "gradient_accumulation_steps must be 1"),
    (dict(warmup_steps=2), "warmup"),
])
def test_settings_a_zero_order_step_cannot_honour_are_refused(tmp_path, bad, match):
    model = lora_model()
    trainer = make_trainer(tmp_path, model, optim.ZOSGD(model.parameters(), lr=1e-2), max_steps=2,
                           save_strategy="no", **bad)
    with pytest.raises(ValueError, match=match):
        trainer.train()


def test_the_zero_order_step_runs_with_the_model_in_eval_mode(tmp_path, monkeypatch):
    model = lora_model()
    seen = []
    original = ZOTrainer.compute_loss

    def recording(self, m, inputs, *args, **kwargs):
        seen.append(m.training)
        return original(self, m, inputs, *args, **kwargs)

    monkeypatch.setattr(ZOTrainer, "compute_loss", recording)
    model.train()  # as a user's model often is (Trainer itself switches to train mode for first-order steps)
    make_trainer(tmp_path, model, optim.ZOSGD(model.parameters(), lr=1e-2), max_steps=2, save_strategy="no").train()
    assert seen and not any(seen)  # dropout off at x + tau z and x - tau z
