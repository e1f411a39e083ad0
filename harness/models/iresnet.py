"""The iResNet family (ArcFace's LResNet-E-IR, the paper's backbones) for 112x112 faces.

Stem conv3x3-BN-PReLU; stages of pre-activation-style blocks BN-conv-BN-PReLU-conv(stride)-BN + shortcut; head
BN -> dropout -> flatten -> FC(512) -> BN. The final BatchNorm1d keeps a learnable scale, as official MagFace's
iresnet does, so the network can set the embedding magnitude that MagFace's margin reads. insightface's arcface_torch
instead freezes that scale at 1.0 (features.weight.requires_grad = False); this project does not.
"""
from __future__ import annotations

import torch
from torch import nn

LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
          "iresnet100": (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers, embedding_size=512, input_size=112, dropout=0.0, widths=(64, 128, 256, 512)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0], eps=1e-5),
                                  nn.PReLU(widths[0]))
        blocks, inplanes = [], widths[0]
        for n, planes in zip(layers, widths, strict=True):
            blocks.append(IBasicBlock(inplanes, planes, stride=2))
            blocks += [IBasicBlock(planes, planes) for _ in range(n - 1)]
            inplanes = planes
        self.body = nn.Sequential(*blocks)
        side = input_size // 16
        self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1] * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)   # learnable scale (not frozen at 1)

    def forward(self, x):
        x = self.bn2(self.body(self.stem(x)))
        return self.features(self.fc(self.dropout(torch.flatten(x, 1))))


def iresnet(name: str, embedding_size=512, input_size=112, dropout=0.0) -> IResNet:
    return IResNet(LAYERS[name], embedding_size, input_size, dropout)
