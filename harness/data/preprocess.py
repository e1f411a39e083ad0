"""The one preprocessing convention of the suite, recorded in every dataset's metadata and checkpoint.

RGB channel order, uint8 -> float (x/255 - 0.5)/0.5 in [-1, 1], CHW; random horizontal flip is the only
training augmentation (as the paper). Real data is 112x112; the synthetic default may be 32/64/112.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

PREPROCESSING = {"channels": "RGB", "scale": 1 / 255, "mean": 0.5, "std": 0.5, "layout": "CHW",
                 "train_augmentation": "random horizontal flip p=0.5"}


def to_tensor(image_hwc_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] RGB -> float32 [3, H, W] in [-1, 1]."""
    if image_hwc_uint8.dtype != np.uint8 or image_hwc_uint8.ndim != 3 or image_hwc_uint8.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image_hwc_uint8.dtype} "
                         f"{list(image_hwc_uint8.shape)}")
    t = torch.tensor(image_hwc_uint8).permute(2, 0, 1).float()
    return t.mul_(PREPROCESSING["scale"]).sub_(PREPROCESSING["mean"]).div_(PREPROCESSING["std"])


def batch_to_tensor(images_nhwc_uint8) -> torch.Tensor:
    """uint8 [N, H, W, 3] (numpy or torch) -> float32 [N, 3, H, W] in [-1, 1]."""
    t = torch.as_tensor(images_nhwc_uint8)
    if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] RGB images, got {t.dtype} {list(t.shape)}")
    return t.permute(0, 3, 1, 2).float().mul_(PREPROCESSING["scale"]).sub_(0.5).div_(0.5)


def random_hflip(batch_nchw: torch.Tensor, generator: torch.Generator | None = None,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2 (or where the given bool mask `flip` is True). A select,
    not a masked assignment: no host sync on a GPU."""
    if flip is None:
        flip = torch.rand(batch_nchw.shape[0], generator=generator) < 0.5
    return torch.where(flip.to(batch_nchw.device)[:, None, None, None], batch_nchw.flip(-1), batch_nchw)


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded JPEG/PNG/... bytes -> uint8 [H, W, 3] RGB; `where` names the image in the error. 16-bit grey images
    are scaled to 8 bits (x * 255 / 65535), not clipped; pixels without a fixed range (32-bit integer, float) are
    refused."""
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return image_to_rgb(im, where)
    except UnsupportedImage:
        raise
    except Exception as exc:  # PIL raises several types for bad data
        raise ValueError(f"cannot decode image {where}: {type(exc).__name__}: {exc}") from None


class UnsupportedImage(ValueError):
    pass


def image_to_rgb(im: Image.Image, where: str) -> np.ndarray:
    """An opened PIL image -> uint8 [H, W, 3] RGB, 16-bit grey scaled to 8 bits (PIL's convert would clip it)."""
    check_mode(im.mode, im.format, where)
    if im.mode in SIXTEEN_BIT_MODES or im.mode == "I":   # "I" from a PNG: a 16-bit grey PNG
        grey = np.round(np.asarray(im).astype(np.float64) * (255 / 65535)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def check_mode(mode: str, fmt: str | None, where: str) -> None:
    """Refuse pixel modes that cannot be mapped to 8-bit RGB without guessing their range."""
    if mode == "F" or (mode == "I" and fmt != "PNG"):
        raise UnsupportedImage(f"image {where}: pixel mode {mode!r} ({'float' if mode == 'F' else '32-bit integer'} "
                               "pixels) has no fixed range to map to 8 bits; convert it to 8- or 16-bit RGB/grey first")


def encode_image(image_hwc_uint8: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt.lower() in ("jpeg", "jpg") else {}
    Image.fromarray(image_hwc_uint8, "RGB").save(buf, format="JPEG" if fmt.lower() == "jpg" else fmt.upper(),
                                                   **kwargs)
    return buf.getvalue()
