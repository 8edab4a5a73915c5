"""models/losses.py: each loss's value where it has a closed form, and each one trains."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import real_batch_losses, stuck_after_one_step

from models.losses import LOSSES, build_loss

LABELS = torch.tensor([0, 3, 9, 3])


def confident(labels: torch.Tensor, margin: float = 20.0) -> torch.Tensor:
    """Logits +margin on the true class and -margin elsewhere: every class decided, rightly."""
    return margin * (2 * F.one_hot(labels, 10).float() - 1)


# With all logits equal every class has probability 1/10 (and every sigmoid 1/2).
UNDECIDED = {
    "cross_entropy": math.log(10),
    "nll": math.log(10),
    "multi_margin": 9 / 10,  # nine classes at margin 1 - 0 + 0, averaged over ten
    "bce": math.log(2),
    "mse": (0.9**2 + 9 * 0.1**2) / 10,
}


def test_every_loss_has_a_closed_form_case():
    assert set(UNDECIDED) == set(LOSSES)


@pytest.mark.parametrize("name", LOSSES)
def test_value_with_undecided_and_with_confident_right_logits(name):
    loss = build_loss(name)
    assert loss(torch.zeros(4, 10), LABELS).item() == pytest.approx(UNDECIDED[name])
    assert loss(confident(LABELS), LABELS).item() == pytest.approx(0.0, abs=1e-6)


def test_label_smoothing_moves_a_tenth_of_the_target_to_every_class():
    # Confident logits: -log p is 0 on the true class and 40 (the logit gap) on the other nine;
    # a 0.1 share spread over all ten classes costs 0.1 * 9 * 40 / 10.
    loss = build_loss("cross_entropy", label_smoothing=0.1)
    assert loss(confident(LABELS), LABELS).item() == pytest.approx(3.6, rel=1e-6)
    # Smoothing belongs to cross_entropy only; the others ignore it.
    plain = build_loss("nll", label_smoothing=0.1)(confident(LABELS), LABELS)
    assert plain.item() == pytest.approx(0.0, abs=1e-6)


def test_values_on_random_logits_match_the_textbook_formulas():
    torch.manual_seed(0)
    x, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    p, onehot = x.softmax(1), F.one_hot(y, 10).float()
    sig = torch.sigmoid(x)
    margins = (1 - x[range(6), y, None] + x).clamp(min=0) * (1 - onehot)  # the true class: none
    want = {
        "cross_entropy": -p[range(6), y].log().mean(),
        "nll": -p[range(6), y].log().mean(),
        "multi_margin": margins.sum(1).mean() / 10,
        "bce": -(onehot * sig.log() + (1 - onehot) * (1 - sig).log()).mean(),
        "mse": ((p - onehot) ** 2).mean(),
    }
    for name in LOSSES:
        assert build_loss(name)(x, y).item() == pytest.approx(want[name].item(), rel=1e-5), name


def test_unknown_loss_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; allowed: cross_entropy, nll"):
        build_loss("hinge")


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_gives_every_weight_a_gradient_step(name):
    assert stuck_after_one_step("sgd", name, lr=0.1) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_fits_a_real_batch(name):
    losses = real_batch_losses("adam", name, lr=3e-3)
    assert losses[-1] < 0.9 * losses[0], losses
