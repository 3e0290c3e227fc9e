"""Learning-rate schedule: linear warmup then cosine decay to a floor (maderix/ANE's schedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineSchedule:
    max_lr: float
    total_steps: int
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        """LR for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.max_lr * (step + 1) / self.warmup_steps
        min_lr = self.max_lr * self.min_lr_ratio
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (self.max_lr - min_lr)
