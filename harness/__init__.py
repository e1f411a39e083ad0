"""The shared training harness: data (harness.data), typed config, backbones, trainer, evaluation, sweeps, plots.

    python -m harness train --config configs/cpu_synthetic_magface.toml [--dry-run]
    python -m harness sweep configs/sweeps/ablation.toml [--quick] [--dry-run | --prune]
    python -m harness evaluate --run results/cpu_synthetic_magface

Imports point one way (a test checks there is no cycle): data -> config -> models -> runstate -> checkpoints ->
distributed (torchrun only) -> metrics, diagnostics, evaluate -> trainer -> sweep -> cli -> __main__; losses and
theory sit below all of them.
"""
