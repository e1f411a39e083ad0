"""Export the synthetic data set in insightface's formats (train.rec/.idx/property + a verification pack)."""
from __future__ import annotations

import os

import numpy as np

from .preprocess import encode_image
from .recordio import write_recordio
from .verification import write_verification_bin


def export_insightface(faces, out_dir: str, fmt: str = "png") -> dict:
    """Write out_dir/train.rec, train.idx, property and out_dir/synthetic_pairs.bin; returns the pack's SHA-256."""
    train = faces.train
    samples = [(int(lab), encode_image(im, fmt)) for lab, im in zip(train.labels, train.images, strict=True)]
    size = faces.config.size
    write_recordio(out_dir, samples, image_size=(size, size), num_classes=faces.num_classes)
    p = faces.pairs
    pair_images = np.stack([faces.eval.images[p.left], faces.eval.images[p.right]], axis=1).reshape(-1, size, size, 3)
    digest = write_verification_bin(os.path.join(out_dir, "synthetic_pairs.bin"), pair_images, p.issame, fmt=fmt)
    return {"train_images": len(samples), "pairs": len(p.issame), "pairs_sha256": digest}
