"""X-vector TDNN with statistics pooling and a classifier head, in plain torch.

Follows SpeechBrain's speaker-id template (5 TDNN blocks, kernels 5-3-3-1-1, dilations
1-2-3-1-1, mean+std pooling, one hidden linear block before the output) with two deliberate
differences: convolutions use no padding and pooling masks by true length, so an utterance gets
the same embedding alone or padded in a batch; and the input is normalised with the train-set
mean/variance stored as buffers, so a checkpoint carries everything needed to use it. Square
roots go through :func:`speaker_data.portable_math.sqrt`, so the model trains to the same bits
on any x86-64 CPU under the workflow's portable numerics.
"""

from __future__ import annotations

import torch
from speaker_data import portable_math
from torch import nn

KERNEL_SIZES = (5, 3, 3, 1, 1)
DILATIONS = (1, 2, 3, 1, 1)
# Frames lost at the edges by the unpadded convolutions: sum of (kernel - 1) * dilation.
RECEPTIVE_SHRINK = sum((k - 1) * d for k, d in zip(KERNEL_SIZES, DILATIONS, strict=True))


def architecture(
    n_mels: int, tdnn_channels: int, tdnn_channels_out: int, emb_dim: int, n_classes: int
) -> dict[str, object]:
    """Everything that determines the parameter shapes; stored in every checkpoint."""
    return {
        "model": "xvector-tdnn",
        "n_mels": n_mels,
        "tdnn_channels": tdnn_channels,
        "tdnn_channels_out": tdnn_channels_out,
        "emb_dim": emb_dim,
        "n_classes": n_classes,
        "kernel_sizes": list(KERNEL_SIZES),
        "dilations": list(DILATIONS),
    }


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over the valid (unpadded) frames of each sequence."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: [batch, channels, time]; lengths: [batch] valid frames after the convolutions.
        mask = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
        count = lengths.to(x.dtype)[:, None]
        mean = (x * mask[:, None, :]).sum(dim=2) / count
        var = (((x - mean[:, :, None]) ** 2) * mask[:, None, :]).sum(dim=2) / count
        return torch.cat([mean, portable_math.sqrt(var + self.eps)], dim=1)


class SpeakerIdModel(nn.Module):
    """Log-mel frames ``[batch, time, n_mels]`` -> speaker log-probabilities ``[batch, n]``."""

    def __init__(
        self,
        n_mels: int,
        tdnn_channels: int,
        tdnn_channels_out: int,
        emb_dim: int,
        n_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.arch = architecture(n_mels, tdnn_channels, tdnn_channels_out, emb_dim, n_classes)
        self.register_buffer("feature_mean", torch.zeros(n_mels))
        self.register_buffer("feature_std", torch.ones(n_mels))
        widths = [tdnn_channels] * (len(KERNEL_SIZES) - 1) + [tdnn_channels_out]
        layers: list[nn.Module] = []
        in_channels = n_mels
        for width, kernel, dilation in zip(widths, KERNEL_SIZES, DILATIONS, strict=True):
            layers += [
                nn.Conv1d(in_channels, width, kernel, dilation=dilation),
                nn.LeakyReLU(),
                nn.BatchNorm1d(width),
                nn.Dropout(dropout),
            ]
            in_channels = width
        self.tdnn = nn.Sequential(*layers)
        self.pooling = StatisticsPooling()
        self.embedding = nn.Linear(2 * tdnn_channels_out, emb_dim)
        self.classifier = nn.Sequential(
            nn.LeakyReLU(),
            nn.BatchNorm1d(emb_dim),
            nn.Dropout(dropout),
            nn.Linear(emb_dim, emb_dim),
            nn.LeakyReLU(),
            nn.BatchNorm1d(emb_dim),
            nn.Linear(emb_dim, n_classes),
        )

    def set_feature_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Install the train-set normalisation (once, before training)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(portable_math.sqrt(var + 1e-5))

    def embed(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Speaker embedding ``[batch, emb_dim]``; ``lengths`` counts valid input frames."""
        x = (feats - self.feature_mean) / self.feature_std
        x = self.tdnn(x.transpose(1, 2))
        return self.embedding(self.pooling(x, lengths - RECEPTIVE_SHRINK))

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.classifier(self.embed(feats, lengths)), dim=1)
