"""JAGUAR SignSGD's released training step, transcribed the way the released code is written.

Ground truth for tests of :mod:`zotheory.algorithms.jaguar_signsgd_released`: a direct
transcription (paraphrased, not copied) of ``OurTrainer.zo_jaguar_step`` in
``evseevgrv/ZO_LLM`` ``trainer.py`` @45a674941bfe47906554fab93ea19d8179914324 (also
@4623781dc00117cbd7b8ae7be4bf073d79e31c0b), "Version R", with the trainer's optimizer
``torch.optim.SGD(params, lr=learning_rate, momentum=momentum)``::

    torch.manual_seed(seed)                       # the GLOBAL torch RNG (seed = np.random.randint(1e9))
    for name, p in trainable parameters:          # all draws first, rows then columns
        1-D: idx = randperm(n)[: max(1, n // 10)]
        2-D: rows = randperm(R)[: max(1, R // 10)];  cols = randperm(C)[: max(1, C // 10)]
        orig[name] = p.data[block].clone()
    p.data[block] += tau  (every p);          loss1 = closure()
    p.data[block] = orig - tau  (every p);    loss2 = closure()
    p.data[block] = orig  (every p)
    rho = (loss1 - loss2).item() / (2 * tau)
    for every p:
        p.grad zeroed (created as zeros if None)
        p.grad[block] = beta * p.grad[block] + (1 - beta) * rho    (zo_use_smoothing; else = rho)
        p.grad = sign(p.grad)
    optimizer.step()                              # torch SGD with momentum
    return loss1

This module uses the global RNG on purpose (it is the released code's stream); callers that
care wrap it in ``torch.random.fork_rng()``. Nothing here is library code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


class ReleasedJaguarSignSGD:
    """The released trainer's state: the trainable ``(name, parameter)`` pairs and its SGD."""

    def __init__(
        self,
        named_params: Sequence[tuple[str, torch.nn.Parameter]],
        *,
        lr: float,
        momentum: float,
        tau: float,
        beta: float,
        use_smoothing: bool = True,
    ) -> None:
        self.named_params = [(n, p) for n, p in named_params if p.requires_grad]
        self.optimizer = torch.optim.SGD([p for _, p in self.named_params], lr=lr, momentum=momentum)
        self.tau = tau
        self.beta = beta
        self.use_smoothing = use_smoothing
        self.last_blocks: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor], seed: int) -> torch.Tensor:
        tau, beta = self.tau, self.beta
        torch.manual_seed(seed)
        selected = {}
        for name, p in self.named_params:
            if p.ndim == 1:
                n = p.shape[0]
                selected[name] = torch.randperm(n, device=p.device)[: max(1, n // 10)]
            else:
                R, C = p.shape
                rows = torch.randperm(R, device=p.device)[: max(1, R // 10)]
                cols = torch.randperm(C, device=p.device)[: max(1, C // 10)]
                selected[name] = (rows, cols)
        self.last_blocks = selected

        orig = {}
        for name, p in self.named_params:
            if p.ndim == 1:
                idx = selected[name]
                orig[name] = p.data[idx].clone()
                p.data[idx] += tau
            else:
                rows, cols = selected[name]
                orig[name] = p.data[rows[:, None], cols].clone()
                p.data[rows[:, None], cols] += tau
        loss1 = closure()

        for name, p in self.named_params:
            if p.ndim == 1:
                p.data[selected[name]] = orig[name] - tau
            else:
                rows, cols = selected[name]
                p.data[rows[:, None], cols] = orig[name] - tau
        loss2 = closure()

        for name, p in self.named_params:
            if p.ndim == 1:
                p.data[selected[name]] = orig[name]
            else:
                rows, cols = selected[name]
                p.data[rows[:, None], cols] = orig[name]

        rho = (loss1 - loss2).item() / (2 * tau)

        for name, p in self.named_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()
            if p.ndim == 1:
                idx = selected[name]
                if self.use_smoothing:
                    p.grad[idx] = beta * p.grad[idx] + (1 - beta) * rho
                else:
                    p.grad[idx] = rho
            else:
                rows, cols = selected[name]
                if self.use_smoothing:
                    p.grad[rows[:, None], cols] = beta * p.grad[rows[:, None], cols] + (1 - beta) * rho
                else:
                    p.grad[rows[:, None], cols] = rho
            p.grad = torch.sign(p.grad)

        self.optimizer.step()
        return loss1

    def momentum_buffers(self) -> list[torch.Tensor | None]:
        """torch SGD's ``state[p]['momentum_buffer']`` per trainable parameter."""
        return [self.optimizer.state[p].get("momentum_buffer") for _, p in self.named_params]
