"""The shared training harness, in rooms whose imports point one way (tests/project/test_imports.py holds the order):

    locks, files, devices      file locks; atomic JSON/npz I/O; the torch device
    data/                      synthetic identities with ground-truth quality; RecordIO, .bin, folders, IJB layouts
    provenance, measures/      git and package versions; ROC, ERC/EDC, statistics, clustering scores, IJB protocol
    config_checks, config      the typed TOML run config and the checks of its values
    checkpoint_io, models/     checkpoints read as data only; backbones, released checkpoints, a run's network
    source                     the training data a config names
    evaluation/                a run or a release evaluated: verification sets, IJB, training diagnostics
    training/                  one run trained: trainer, checkpoints, RNG, torchrun, schedule, determinism
    sweeps/                    experiments as data: specs, runs, tables, tuning
    publishing/, plots         the repository's tracked outputs; figures
    bench_cli, commands        the benchmark scripts' shared flags; the command line (python -m harness, magface-bench)

losses and theory sit below all of them.

    python -m harness train --config configs/cpu_synthetic_magface.toml [--dry-run]
    python -m harness sweep configs/sweeps/ablation.toml [--quick] [--dry-run | --prune]
    python -m harness evaluate --run results/cpu_synthetic_magface
"""
