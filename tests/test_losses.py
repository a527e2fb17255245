import math

import pytest
import torch
import torch.nn.functional as F

from recsys.losses import sampled_softmax_logits, sampled_softmax_loss


def test_logq_correction_lowers_the_logit_of_frequent_items():
    user = torch.tensor([[1.0, 0.0]])
    item = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # same score for both items
    log_q = torch.log(torch.tensor([0.5, 0.01]))  # item 0 is sampled 50x more often
    logits = sampled_softmax_logits(user, item, torch.tensor([0, 1]), log_q, temperature=1.0)
    assert logits[0, 0] < logits[0, 1]
    assert logits[0, 1] - logits[0, 0] == pytest.approx(math.log(50.0), rel=1e-5)


def test_accidental_hits_are_masked_but_the_positive_is_kept():
    user = torch.eye(3)
    item = torch.eye(3)
    ids = torch.tensor([7, 7, 9])  # rows 0 and 1 share their positive item
    logits = sampled_softmax_logits(user, item, ids, torch.zeros(3), temperature=1.0)
    assert torch.isneginf(logits[0, 1]) and torch.isneginf(logits[1, 0])
    assert torch.isfinite(logits.diagonal()).all() and torch.isfinite(logits[2]).all()


def test_loss_is_cross_entropy_on_the_diagonal_and_extra_negatives_append():
    torch.manual_seed(0)
    user = F.normalize(torch.randn(4, 8), dim=-1)
    item = F.normalize(torch.randn(4, 8), dim=-1)
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    ids = torch.arange(4)
    expected = F.cross_entropy(user @ item.T / 0.1 - log_q[None, :], torch.arange(4))
    assert sampled_softmax_loss(user, item, ids, log_q, 0.1) == pytest.approx(float(expected), rel=1e-5)
    neg = F.normalize(torch.randn(5, 8), dim=-1)
    logits = sampled_softmax_logits(user, item, ids, log_q, 0.1, neg, torch.full((5,), math.log(1 / 100)))
    assert logits.shape == (4, 9)
    assert torch.allclose(logits[:, 4:], user @ neg.T / 0.1 - math.log(1 / 100))


def test_equal_shares_of_a_batch_average_to_the_global_batch_loss():
    """What each rank of a distributed step computes: its users against every rank's items."""
    torch.manual_seed(1)
    user = F.normalize(torch.randn(6, 8), dim=-1)
    item = F.normalize(torch.randn(6, 8), dim=-1)
    ids = torch.tensor([3, 5, 3, 8, 9, 5])  # accidental hits across the two halves
    log_q = torch.log(torch.rand(6) * 0.5 + 0.01)
    whole = sampled_softmax_loss(user, item, ids, log_q, 0.1)
    halves = [
        sampled_softmax_loss(user[s], item, ids, log_q, 0.1, positives=torch.arange(6)[s])
        for s in (slice(0, 3), slice(3, 6))
    ]
    assert float(sum(halves) / 2) == pytest.approx(float(whole), rel=1e-6)
    rows = sampled_softmax_logits(user[3:], item, ids, log_q, 0.1, positives=torch.arange(3, 6))
    assert torch.equal(torch.isneginf(rows), torch.isneginf(sampled_softmax_logits(user, item, ids, log_q, 0.1)[3:]))
