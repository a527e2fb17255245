"""Losses for retrieval training (pure functions of tensors)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sampled_softmax_logits(
    user: torch.Tensor,
    item: torch.Tensor,
    item_ids: torch.Tensor,
    item_log_q: torch.Tensor,
    temperature: float,
    neg_item: torch.Tensor | None = None,
    neg_log_q: torch.Tensor | None = None,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of in-batch sampled softmax with logQ correction and accidental-hit masking.

    Row b scores user b against every item of the batch; its positive is column
    ``positives[b]`` (default: the diagonal, i.e. ``user`` and ``item`` are the same batch).
    A distributed trainer passes its ranks' users against the items gathered from every
    rank, with ``positives`` pointing at this rank's block.
    In-batch negatives are sampled in proportion to item frequency, which over-penalises
    popular items; subtracting log q (Yi et al. 2019) corrects the bias:
    ``logit_bj = <u_b, v_j> / T - log q_j``. An item that appears twice in the batch is
    not a negative for the row whose positive it is (masked to -inf). Optional extra
    negatives ``neg_item`` come with their own sampling log-probabilities.
    """
    if positives is None:
        positives = torch.arange(user.shape[0], device=user.device)
    rows = torch.arange(user.shape[0], device=user.device)
    logits = user @ item.T / temperature - item_log_q[None, :]
    same = item_ids[None, :] == item_ids[positives][:, None]
    same[rows, positives] = False
    logits = logits.masked_fill(same, float("-inf"))
    if neg_item is not None:
        extra = user @ neg_item.T / temperature - neg_log_q[None, :]
        logits = torch.cat([logits, extra], dim=1)
    return logits


def sampled_softmax_loss(user, item, item_ids, item_log_q, temperature, neg_item=None, neg_log_q=None, weights=None, positives=None) -> torch.Tensor:
    """Mean cross-entropy of the sampled softmax over the rows of ``user``."""
    logits = sampled_softmax_logits(user, item, item_ids, item_log_q, temperature, neg_item, neg_log_q, positives)
    labels = positives if positives is not None else torch.arange(user.shape[0], device=user.device)
    loss = F.cross_entropy(logits, labels, reduction="none")
    if weights is not None:
        return (loss * weights).sum() / weights.sum()
    return loss.mean()
