"""Models the neural-network tests load by import path (``--model nn_models:NAME``)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(image_shape, n_classes):
    """A small CNN with batch norm: one 3×3 convolution, BN, ReLU, pooling, a linear layer."""
    channels = image_shape[0]
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, n_classes))


def with_dropout(image_shape, n_classes):
    """An MLP with dropout (draws from PyTorch's generator in training mode)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(image_shape[0] * image_shape[1] * image_shape[2],
                                                 32), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(32, n_classes))


def integer_weights(image_shape, n_classes):
    """A module with an integer parameter (refused: parameters must be floating point)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(image_shape[0] * image_shape[1]
                                                  * image_shape[2], n_classes))
    model.register_parameter("steps", nn.Parameter(torch.zeros(3, dtype=torch.int64),
                                                   requires_grad=False))
    return model


def not_a_module(image_shape, n_classes):
    return "a string"
