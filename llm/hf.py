r"""Hugging Face ``Trainer`` with zotheory optimizers: :class:`ZOTrainer`.

``ZOTrainer`` is ``transformers.Trainer`` with one method changed, ``training_step``: when
the optimizer is a zero-order (or forward-mode) :mod:`zotheory.optim` optimizer, the step
puts the model in ``eval()`` mode (dropout off, so ``f(x + tau z)`` and ``f(x - tau z)`` see
the same network), and calls ``optimizer.step(closure)`` with a closure returning
``compute_loss(model, inputs)`` (no ``backward``). Everything else is Trainer's own: the
scheduler, logging (plus ``forward_passes``, the optimizer's oracle calls), evaluation,
checkpoints (the optimizer's ``state_dict`` holds its generator, so a resumed run continues
bitwise) and resume. First-order zotheory optimizers (``FOSGD``, ``Adam``, ...) and torch's own
take Trainer's usual path (``backward``, then ``optimizer.step()``, which reads ``p.grad``)::

    from zotheory.optim import ZOSGD
    from zotheory.llm.hf import ZOTrainer

    opt = ZOSGD(model.parameters(), lr=1e-6, tau=1e-3)      # frozen (LoRA base) weights are skipped
    trainer = ZOTrainer(model=model, args=TrainingArguments(...), train_dataset=ds,
                        optimizers=(opt, None))             # None: Trainer makes its scheduler
    trainer.train()                                          # trainer.train(resume_from_checkpoint=True)

Constraints (checked when training starts, each a ``ValueError`` saying what to change):

* ``gradient_accumulation_steps`` must be 1 for a zero-order optimizer: every ZO step is
  complete in itself (use a larger ``per_device_train_batch_size`` instead).
* zotheory's optimizers need ``lr > 0`` at every step, so a warmup that starts at 0
  (``warmup_steps > 0`` with Trainer's linear or cosine schedules) is refused; the default
  (no warmup, linear decay) uses ``lr > 0`` at every step.
* Forward-Grad builds its functional closure with ``torch.func.functional_call`` over the
  model's trainable parameters.

How the step is shared: Trainer calls ``training_step`` and then ``optimizer.step()``. For a
zero-order optimizer the step happens inside ``training_step`` (the loss it logs is the mean
of the step's oracle values, which needs the step), and the optimizer is told that the next
closure-less ``step()`` from Trainer belongs to that step (:meth:`KernelOptimizer.step`
returns at once for it). No Trainer code is copied.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from zotheory.optim import KernelOptimizer

__all__ = ["ZOTrainer"]


def _zotheory_optimizer(optimizer: Any) -> KernelOptimizer | None:
    """The zotheory optimizer behind Trainer's (accelerate wraps it), or None."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner if isinstance(inner, KernelOptimizer) else None


class ZOTrainer(Trainer):
    """``transformers.Trainer`` whose training step is a zotheory zero-order step (see the module doc)."""

    def _check_zero_order(self, opt: KernelOptimizer) -> None:
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError(
                f"gradient_accumulation_steps must be 1 with the zero-order optimizer {type(opt).__name__} "
                f"(got {self.args.gradient_accumulation_steps}): each zero-order step is complete; use a larger "
                f"per_device_train_batch_size instead")
        warmup = getattr(self.args, "warmup_steps", 0) or 0
        if warmup > 0 or (getattr(self.args, "warmup_ratio", 0) or 0) > 0:
            raise ValueError(
                f"{type(opt).__name__} needs lr > 0 at every step, and Trainer's warmup starts at lr = 0: "
                f"set warmup_steps=0 (the default) or pass your own scheduler in optimizers=(opt, scheduler)")

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        opt = _zotheory_optimizer(self.optimizer)
        if opt is None or not opt.zero_order:
            return super().training_step(model, inputs, num_items_in_batch)
        self._check_zero_order(opt)
        model.eval()  # dropout off: the perturbed losses must see the same network
        inputs = self._prepare_inputs(inputs)
        if opt.kind == "forward-mode":
            closure = self._functional_closure(model, inputs, opt)
        else:
            def closure() -> torch.Tensor:
                with self.compute_loss_context_manager():
                    return self.compute_loss(model, inputs)
        loss = opt.step(closure)
        opt._trainer_stepped = True  # Trainer's own optimizer.step() that follows is this step
        return loss.detach().to(self.args.device)

    def _functional_closure(self, model: torch.nn.Module, inputs: dict[str, Any], opt: KernelOptimizer):
        """Forward-Grad: ``fn(params) -> loss`` with the trainable parameters replaced (functional_call)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {id(p): n for n, p in model.named_parameters()}
        keys = [names[id(p)] for p in opt.params]

        def fn(tensors):
            # The math attention kernel has forward-mode derivatives (the fused ones do not).
            with sdpa_kernel([SDPBackend.MATH]):
                out = torch.func.functional_call(model, dict(zip(keys, tensors)), (), inputs, strict=False)
            return out["loss"] if isinstance(out, dict) else out[0]

        return fn

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        opt = _zotheory_optimizer(self.optimizer)
        if opt is not None:
            logs = {**logs, "forward_passes": opt.oracle_calls}
        super().log(logs, start_time)
