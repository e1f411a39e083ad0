"""Every random generator a run draws from, saved into and restored from its checkpoints, so a resume is exact."""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state(device: torch.device) -> dict:
    """Every generator the run draws from, as plain data (numpy's as a tensor), so checkpoints load with
    weights_only=True. On a GPU only the run's own device's generator: a rank saves its GPU, and a resume may see
    fewer GPUs than the run that wrote the checkpoint. A CPU run never touches CUDA (no context initialised)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    else:                           # checkpoints written before: numpy's own tuple (loaded through NUMPY_RNG_GLOBALS)
        np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif "cuda" in state:           # written by an earlier suite version: one state per GPU visible then
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(state["cuda"]):
            raise ValueError(f"the checkpoint holds CUDA RNG states for {len(state['cuda'])} GPU(s), none for "
                             f"{device}; resume with the same visible GPUs (CUDA_VISIBLE_DEVICES)")
        torch.cuda.set_rng_state(state["cuda"][index], device)
