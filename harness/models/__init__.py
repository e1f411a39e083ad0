"""Backbones: the paper's iResNet family and a small CNN for the CPU default."""
from .iresnet import LAYERS, iresnet
from .small_cnn import SmallCNN

BACKBONES = ("small_cnn", *LAYERS)


def build_backbone(name: str, embedding_size: int, input_size: int, dropout: float = 0.0, width: int = 32):
    if name == "small_cnn":
        if input_size < 16:
            raise ValueError(f"input_size={input_size} px is too small for small_cnn: it needs at least 16 px (its "
                             "four blocks halve the image four times)")
        return SmallCNN(embedding_size, input_size, width, dropout)
    if name in LAYERS:
        if input_size % 16:
            raise ValueError(f"input_size={input_size} must be a multiple of 16 for {name}")
        return iresnet(name, embedding_size, input_size, dropout)
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
