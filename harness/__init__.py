"""The shared training harness: data (harness.data), typed config, backbones, trainer, evaluation, plots.

    python -m harness train --config configs/cpu_synthetic_magface.toml
    python -m harness evaluate --run results/cpu_synthetic_magface
"""
