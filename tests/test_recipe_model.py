"""The x-vector model: length masking, architecture record, shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes/speaker_id"))
from model import RECEPTIVE_SHRINK, SpeakerIdModel  # noqa: E402


@pytest.fixture
def model() -> SpeakerIdModel:
    torch.manual_seed(0)
    built = SpeakerIdModel(
        n_mels=8, tdnn_channels=12, tdnn_channels_out=20, emb_dim=6, n_classes=3, dropout=0.2
    )
    return built.eval()


def test_padding_does_not_change_an_utterance_embedding(model: SpeakerIdModel) -> None:
    # Unpadded convolutions plus masked pooling: alone or padded in a batch, same result.
    short, long = torch.randn(1, 30, 8), torch.randn(1, 55, 8)
    batch = torch.zeros(2, 55, 8)
    batch[0, :30], batch[1] = short[0], long[0]
    with torch.no_grad():
        together = model(batch, torch.tensor([30, 55]))
        alone = torch.cat([model(short, torch.tensor([30])), model(long, torch.tensor([55]))])
    assert together.shape == (2, 3)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_output_is_log_probabilities(model: SpeakerIdModel) -> None:
    with torch.no_grad():
        log_probs = model(torch.randn(4, 40, 8), torch.full((4,), 40))
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(4))


def test_architecture_record_and_receptive_field(model: SpeakerIdModel) -> None:
    assert RECEPTIVE_SHRINK == 14  # kernels 5-3-3-1-1, dilations 1-2-3-1-1
    assert model.arch == {
        "model": "xvector-tdnn",
        "n_mels": 8,
        "tdnn_channels": 12,
        "tdnn_channels_out": 20,
        "emb_dim": 6,
        "n_classes": 3,
        "kernel_sizes": [5, 3, 3, 1, 1],
        "dilations": [1, 2, 3, 1, 1],
    }
    with torch.no_grad():
        assert model.embed(torch.randn(2, 15, 8), torch.tensor([15, 15])).shape == (2, 6)


def test_feature_statistics_travel_in_the_state_dict(model: SpeakerIdModel) -> None:
    model.set_feature_stats(torch.full((8,), 2.0), torch.full((8,), 4.0))
    state = model.state_dict()
    torch.testing.assert_close(state["feature_mean"], torch.full((8,), 2.0))
    torch.testing.assert_close(state["feature_std"], torch.full((8,), (4.0 + 1e-5) ** 0.5))
