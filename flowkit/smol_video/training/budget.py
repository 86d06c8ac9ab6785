"""How many training clips and single frames a run has seen after a number of steps."""

from __future__ import annotations


def samples_seen(config, step: int) -> dict[str, int]:
    """Training clips and single frames a run has seen after ``step`` steps (the budget of an A/B)."""
    if config.stage == "align":
        frame_steps = step
    elif config.frame_batch_every:
        frame_steps = (step + config.frame_batch_every - 1) // config.frame_batch_every
    else:
        frame_steps = 0
    return {"clips": (step - frame_steps) * config.batch_size, "frames": frame_steps * config.batch_size}
