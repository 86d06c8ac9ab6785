"""Low-rank adapters (LoRA) for the language model's Linear layers, and merging them back.

Kept dependency-free: a :class:`LoRALinear` wraps an ``nn.Linear`` and adds
``scale * B(A(x))`` with ``B`` initialised to zero, so training starts from the
unchanged model. The kit ships the adapters' factors in its delta; assembly folds them into the weights
(:func:`flowkit.model.checkpoints.merge_lora_weight`) and loads the result through ``from_pretrained``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0):
        super().__init__()
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def add_lora(module: nn.Module, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS) -> list[str]:
    """Wrap every Linear whose name ends in one of ``targets``; returns the wrapped names."""
    wrapped = []
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.Linear) and attr in targets:
                setattr(child, attr, LoRALinear(sub, rank, alpha))
                wrapped.append(f"{name}.{attr}" if name else attr)
    return wrapped


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]
