"""Loss scaling against fp16 gradient underflow on the ANE.

Static scaling multiplies the loss gradient by a constant (the original used 256). Dynamic
scaling grows the scale after ``growth_interval`` clean steps and halves it, skipping the step,
whenever a gradient is inf/NaN: the usual mixed-precision recipe.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LossScaler:
    scale: float = 256.0
    dynamic: bool = False
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 200
    min_scale: float = 1.0
    max_scale: float = 2.0**24
    good_steps: int = 0
    skipped: int = 0

    def update(self, finite: bool) -> bool:
        """Record one optimizer step's overflow check; returns True if the step may apply."""
        if not self.dynamic:
            if not finite:
                self.skipped += 1
            return finite
        if not finite:
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale = min(self.scale * self.growth_factor, self.max_scale)
            self.good_steps = 0
        return True

    def state_dict(self) -> dict[str, float | int | bool]:
        return {
            "scale": self.scale,
            "dynamic": self.dynamic,
            "good_steps": self.good_steps,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, float | int | bool]) -> None:
        self.scale = float(state["scale"])
        self.dynamic = bool(state["dynamic"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state["skipped"])
