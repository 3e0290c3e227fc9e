"""Training: the kernel pipeline step, optimizer, schedules, loss scaling, loop and telemetry."""
