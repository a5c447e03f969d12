import math

import pytest
import torch

from cogfm_hf.training import LossConfig, self_correction_loss, token_weights

MARKER, NEWLINE = 4, 9


def small_case():
    # tokens: 5 [6 7](error) MARKER 8 NEWLINE 5 pad ; vocab 10
    input_ids = torch.tensor([[5, 6, 7, MARKER, 8, NEWLINE, 5, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    error = torch.tensor([[0, 1, 1, 0, 0, 0, 0, 0]])
    torch.manual_seed(0)
    logits = torch.randn(1, 8, 10)
    return input_ids, attention, error, logits


def test_weights_mark_errors_marker_correction_and_padding():
    ids, attention, error, _ = small_case()
    config = LossConfig(error_weight=0.0, marker_weight=2.0, correction_weight=3.0)
    masks = token_weights(ids, attention, error, MARKER, torch.tensor([NEWLINE]), config)
    # predicted tokens: 6 7 M 8 NL 5 pad
    assert masks["error"][0].tolist() == [True, True, False, False, False, False, False]
    assert masks["marker"][0].tolist() == [False, False, True, False, False, False, False]
    assert masks["correction"][0].tolist() == [False, False, False, True, True, False, False]
    assert masks["weights"][0].tolist() == [0.0, 0.0, 2.0, 3.0, 3.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "config",
    [
        LossConfig(),
        LossConfig(error_weight=0.0),
        LossConfig(error_weight=0.0, unlikelihood=0.5),
        LossConfig(marker_weight=2.0, correction_weight=1.5, z_loss=1e-3),
    ],
)
def test_loss_equals_a_hand_computation(config):
    ids, attention, error, logits = small_case()
    masks = token_weights(ids, attention, error, MARKER, torch.tensor([NEWLINE]), config)
    terms = self_correction_loss(logits, ids, masks, config)
    expected = 0.0
    weights = {
        0: config.error_weight,
        1: config.error_weight,
        2: config.marker_weight,
        3: config.correction_weight,
        4: config.correction_weight,
        5: 1.0,
        6: 0.0,
    }
    for t in range(7):  # position t predicts token t+1
        log_probs = torch.log_softmax(logits[0, t], dim=-1)
        target = ids[0, t + 1].item()
        expected += weights[t] * -log_probs[target].item()
        if t in (0, 1) and config.unlikelihood:
            p = math.exp(log_probs[target].item())
            expected += config.unlikelihood * -math.log(1 - p)
        if t < 6 and config.z_loss:
            expected += config.z_loss * torch.logsumexp(logits[0, t], dim=-1).item() ** 2
    assert terms["total"].item() == pytest.approx(expected, rel=1e-5)


def test_negative_weights_are_rejected():
    with pytest.raises(ValueError, match="loss.unlikelihood"):
        LossConfig(unlikelihood=-1)
