"""Heads by name: adding a loss is one file plus one line here."""
from __future__ import annotations

import inspect

from .adacos import AdaCosHead
from .adaface import AdaFaceHead
from .arcface import ArcFaceHead
from .circleloss import CircleLossHead
from .cosface import CosFaceHead
from .curricularface import CurricularFaceHead
from .elasticface import ElasticArcFaceHead, ElasticCosFaceHead
from .magface import MagCosFaceHead, MagFaceHead
from .mv_softmax import MVSoftmaxHead
from .softmax import NormFaceHead, SoftmaxHead
from .sphereface import SphereFaceHead
from .subcenter import SubCenterArcFaceHead
from .uniface import UniFaceHead

# The paper's heads and their relatives, then the field's other families: reshaped negatives (CurricularFace,
# MV-Softmax, CircleLoss), several centres per class (Sub-center ArcFace), an adaptive scale (AdaCos), a margin
# drawn per sample (ElasticFace) and no softmax (UniFace).
HEADS = {cls.name: cls for cls in (SoftmaxHead, NormFaceHead, CosFaceHead, ArcFaceHead, MagFaceHead,
                                   MagCosFaceHead, AdaFaceHead, SphereFaceHead, CurricularFaceHead, MVSoftmaxHead,
                                   CircleLossHead, SubCenterArcFaceHead, AdaCosHead, ElasticArcFaceHead,
                                   ElasticCosFaceHead, UniFaceHead)}


def head_parameters(name: str) -> list[str]:
    """The keyword parameters a head accepts (beyond num_classes and embedding_size)."""
    sig = inspect.signature(HEADS[name].__init__)
    return [p for p in sig.parameters if p not in ("self", "num_classes", "embedding_size")]


def build_head(name: str, num_classes: int, embedding_size: int, **params):
    """Build a head by registry name; typos in the name or a parameter raise a ValueError listing valid ones."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads: {', '.join(sorted(HEADS))}")
    valid = head_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for head {name!r}; valid parameters: {', '.join(valid)}")
    return HEADS[name](num_classes, embedding_size, **params)
