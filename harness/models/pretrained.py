"""Released iResNet checkpoints (official MagFace, insightface arcface_torch) as this suite's network.

Both releases name the layers conv1/bn1/prelu, layer1..layer4, bn2, fc, features; this suite's IResNet names them
stem.0/stem.1/stem.2 and one flat `body`. The mapping is written from that architecture: block j of layer i is
body[offset_i + j], offset_i = the blocks of the layers before it. Formats (from their descriptions):
- "magface": a dict with `state_dict` holding the whole training model: the backbone's keys prefixed
  `module.features.` (the model wrapped in DataParallel) or `features.module.` (only the backbone in DDP), beside the
  classifier's (`module.fc.*`, `parallel_fc.*`), which are dropped (listed in `module.dropped_keys`); BatchNorm eps
  2e-5; the final BatchNorm1d learnable; input BGR in [0, 1].
- "insightface": a plain state dict (arcface_torch `backbone.pth`); eps 1e-5; the final BatchNorm1d's scale fixed;
  input RGB, (x / 255 - 0.5) / 0.5.
Loading is data only (weights_only=True); unknown, missing or mis-shaped keys and another depth are errors listing
what is wrong. The module runs in eval mode and carries its input convention as `module.preprocessing`.
"""
from __future__ import annotations

import re

from torch import nn

from harness.checkpoint_io import load_data

from .iresnet import LAYERS, iresnet

FORMATS = {
    "magface": {"eps": 2e-5, "prefixes": ("features.module.", "module.features."), "container": "state_dict",
                "preprocessing": {"channels": "BGR", "scale": 1 / 255, "mean": 0.0, "std": 1.0, "size": 112}},
    "insightface": {"eps": 1e-5, "prefixes": ("",), "container": None,
                    "preprocessing": {"channels": "RGB", "scale": 1 / 255, "mean": 0.5, "std": 0.5, "size": 112}},
}
STEM = {"conv1.": "stem.0.", "bn1.": "stem.1.", "prelu.": "stem.2."}
LAYER_KEY = re.compile(r"layer([1-4])\.(\d+)\.(.*)")


def release_key_to_suite(key: str, layers) -> str:
    """One released parameter name as this suite's name (layers: the blocks per stage of the backbone)."""
    m = LAYER_KEY.fullmatch(key)
    if m:
        stage, block, rest = int(m[1]) - 1, int(m[2]), m[3]
        return f"body.{sum(layers[:stage]) + block}.{rest}"
    for old, new in STEM.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def suite_key_to_release(key: str, layers) -> str:
    """The inverse of release_key_to_suite (to write checkpoints in a release's layout, e.g. for tests)."""
    if key.startswith("body."):
        index, rest = key[len("body."):].split(".", 1)
        index, stage = int(index), 0
        while index >= layers[stage]:
            index, stage = index - layers[stage], stage + 1
        return f"layer{stage + 1}.{index}.{rest}"
    for old, new in STEM.items():
        if key.startswith(new):
            return old + key[len(new):]
    return key


def release_depth(keys) -> tuple:
    """Blocks per stage found in a released state dict's keys."""
    blocks = [set() for _ in range(4)]
    for k in keys:
        m = LAYER_KEY.fullmatch(k)
        if m:
            blocks[int(m[1]) - 1].add(int(m[2]))
    return tuple(len(b) for b in blocks)


def load_pretrained(path: str, format: str, backbone: str, embedding_size: int = 512) -> nn.Module:
    """The released network at `path` as an IResNet in eval mode that outputs what the original outputs."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: expected one of {sorted(FORMATS)}")
    if backbone not in LAYERS:
        raise ValueError(f"backbone={backbone!r}: expected one of {sorted(LAYERS)}")
    spec = FORMATS[format]
    state = load_data(path, "pretrained checkpoint")
    if spec["container"]:
        if not isinstance(state, dict) or spec["container"] not in state:
            raise ValueError(f"{path}: a {format} checkpoint is a dict with {spec['container']!r}; this one has keys "
                             f"{sorted(state)[:8] if isinstance(state, dict) else type(state).__name__}")
        state = state[spec["container"]]
    elif isinstance(state, dict) and "state_dict" in state:
        raise ValueError(f"{path}: holds a 'state_dict' entry, like an official MagFace checkpoint; use "
                         "format='magface'")
    state, dropped = _strip_prefix(state, spec["prefixes"], path, format)
    layers = LAYERS[backbone]
    found = release_depth(state)
    if found != layers:
        raise ValueError(f"{path}: a backbone with {found} blocks per stage, not {backbone} {layers}")
    model = iresnet(backbone, embedding_size)
    mapped = {release_key_to_suite(k, layers): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked"))
    unknown = sorted(suite_key_to_release(k, layers) for k in mapped if k not in own)
    shapes = sorted(f"{suite_key_to_release(k, layers)} {tuple(v.shape)} vs {tuple(own[k].shape)}"
                    for k, v in mapped.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
    if missing or unknown or shapes:
        raise ValueError(f"{path} does not fit {backbone} (embedding {embedding_size}): missing "
                         f"{[suite_key_to_release(k, layers) for k in missing][:10]}, unknown {unknown[:10]}, "
                         f"shape mismatches {shapes[:10]}")
    model.load_state_dict({**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **mapped})
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.eps = spec["eps"]
    if format == "insightface":
        model.features.weight.requires_grad_(False)   # arcface_torch keeps this scale at its stored value
    model.preprocessing = dict(spec["preprocessing"], format=format)
    model.dropped_keys = dropped
    return model.eval()


def _strip_prefix(state: dict, prefixes, path: str, format: str) -> tuple[dict, list]:
    """(the backbone's entries without the prefix, the other keys): the prefix that the most keys carry."""
    best = max(prefixes, key=lambda p: sum(k.startswith(p) for k in state)) if state else prefixes[0]
    kept = {k[len(best):]: v for k, v in state.items() if k.startswith(best)}
    if not kept:
        raise ValueError(f"{path}: a {format} state dict has its backbone's keys under one of {list(prefixes)}; "
                         f"found e.g. {sorted(state)[:3]}")
    return kept, sorted(k for k in state if not k.startswith(best))
