"""A network for inference with its input convention: a released checkpoint (MagFace, insightface) or a run of this
suite, and the conversion of aligned RGB crops into its input. Shared by `embed`, release evaluation and IJB."""
from __future__ import annotations

import numpy as np

from harness.data.preprocess import PREPROCESSING
from harness.models.build import run_backbone
from harness.models.pretrained import load_pretrained


def load_network(checkpoint: str, format: str, backbone: str | None = None, embedding_size: int = 512):
    """(network in eval mode, its preprocessing with `size`) for a release or a run folder of this suite."""
    if format == "run":
        model, ckpt = run_backbone(checkpoint)
        return model.eval(), dict(ckpt.get("preprocessing", PREPROCESSING), size=ckpt["image_size"])
    if not backbone:
        raise ValueError(f"--format {format} needs --backbone (the released network's depth, e.g. iresnet100)")
    model = load_pretrained(checkpoint, format, backbone, embedding_size)
    return model, model.preprocessing


def network_input(rgb_nhwc_uint8: np.ndarray, prep: dict) -> np.ndarray:
    """RGB uint8 images [N, H, W, 3] as the network's input [N, 3, H, W] float32 under its convention."""
    x = rgb_nhwc_uint8[..., ::-1] if prep["channels"] == "BGR" else rgb_nhwc_uint8
    x = (x.astype(np.float32) * prep["scale"] - prep["mean"]) / prep["std"]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
