"""Face-image quality estimators other than the feature magnitude, for the error-versus-discard comparison (paper
Fig. 6): SER-FIQ on the recognition network itself, and image sharpness. Higher means better quality for both.

SER-FIQ (Terhörst et al., CVPR 2020, "same model" variant): run the network m times with dropout active on the
input of its embedding layer; an image whose stochastic embeddings agree is of high quality. Quality =
2 sigmoid(-mean Euclidean distance between the m unit embeddings, over all pairs). Only the embedding layer is
stochastic, so the trunk runs once and the m passes repeat the last two layers (dropout -> fc -> BatchNorm).
Sharpness: the variance of the Laplacian of the grey image (Pech-Pacheco et al., 2000), a no-reference measure of
blur. BRISQUE is not included: the one packaged implementation (piq) downloads its SVM weights at run time.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from harness.data import batch_to_tensor

SERFIQ_PASSES = 100       # m in the SER-FIQ paper
SERFIQ_DROPOUT = 0.5      # its dropout rate


@torch.no_grad()
def serfiq(backbone, images_uint8: np.ndarray, passes: int = SERFIQ_PASSES, p: float = SERFIQ_DROPOUT,
           batch_size: int = 256, seed: int = 0) -> np.ndarray:
    """SER-FIQ quality [N] of uint8 [N, H, W, 3] images under `backbone` (one of this suite's networks: the layers
    `dropout`, `fc`, `features` end its forward)."""
    missing = [name for name in ("dropout", "fc", "features") if not hasattr(backbone, name)]
    if missing:
        raise ValueError(f"SER-FIQ needs a network ending in dropout -> fc -> features; {type(backbone).__name__} "
                         f"lacks {missing}")
    if passes < 2 or not 0 < p < 1:
        raise ValueError(f"SER-FIQ: passes={passes} (need >= 2) and p={p} (need 0 < p < 1)")
    backbone.eval()
    captured = []
    hook = backbone.dropout.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    generator = torch.Generator().manual_seed(seed)
    quality = []
    try:
        for start in range(0, len(images_uint8), batch_size):
            captured.clear()
            backbone(batch_to_tensor(images_uint8[start:start + batch_size]))
            trunk = captured[0]                                          # [b, D], before the dropout
            emb = torch.stack([backbone.features(backbone.fc(
                trunk * (torch.rand(trunk.shape, generator=generator) >= p).to(trunk.dtype) / (1 - p)))
                for _ in range(passes)], dim=1)                          # [b, m, d]
            quality.append(agreement(emb))
    finally:
        hook.remove()
    return torch.cat(quality).double().numpy()


def agreement(embeddings: torch.Tensor) -> torch.Tensor:
    """SER-FIQ's score of stochastic embeddings [b, m, d]: 2 sigmoid(-mean pairwise distance of the unit vectors)."""
    unit = F.normalize(embeddings, dim=2)
    dist = (2 - 2 * unit @ unit.transpose(1, 2)).clamp_min(0).sqrt()   # [b, m, m]; |u - v|^2 = 2 - 2 cos
    upper = torch.triu_indices(embeddings.shape[1], embeddings.shape[1], offset=1)
    return 2 * torch.sigmoid(-dist[:, upper[0], upper[1]].mean(dim=1))


def laplacian_sharpness(images_uint8: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each image's grey level (ITU-R BT.601 weights) [N]."""
    grey = images_uint8.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.array([ndimage.laplace(g).var() for g in grey])

