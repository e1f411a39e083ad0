"""A small CNN for the CPU default (32-112 px synthetic faces): trains in minutes on two cores.

Same head layout as the iResNet (BN -> dropout -> FC -> BN with a free affine), so the magnitude behaves alike.
"""
from __future__ import annotations

import torch
from torch import nn


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
                         nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    def __init__(self, embedding_size=128, input_size=64, width=32, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(_block(3, width), _block(width, 2 * width), _block(2 * width, 4 * width),
                                  _block(4 * width, 4 * width))
        side = input_size // 16
        self.bn = nn.BatchNorm2d(4 * width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * width * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def forward(self, x):
        return self.features(self.fc(self.dropout(torch.flatten(self.bn(self.body(x)), 1))))
