"""Training one run: the trainer, its checkpoints and RNG state, torchrun, the schedule, determinism."""
