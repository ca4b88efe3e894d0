"""Preference losses: sequence log-probabilities, DPO (and IPO, hinge), Bradley–Terry.

**Sequence log-probability.** A causal LM's logits at position ``t`` predict token ``t+1``,
so for a sequence ``y`` with response mask ``m``

    log π(y | x) = Σ_{t ≥ 1} m_t · log softmax(logits_{t−1})[y_t].

**DPO** (Rafailov et al., 2023). With the implicit rewards
``r_w = β (log π_θ(y_w|x) − log π_ref(y_w|x))`` and ``r_l`` likewise, and ``h = r_w − r_l``:

* ``"sigmoid"`` (DPO):  ``−(1−ε) log σ(h) − ε log σ(−h)`` (ε = label smoothing, the
  "conservative DPO" of noisy labels; ε = 0 gives ``−log σ(h)``);
* ``"hinge"`` (SLiC):   ``max(0, 1 − h)``;
* ``"ipo"`` (Azar et al., 2023): ``(h/β − 1/(2β))²`` — a squared loss on the log-ratio
  difference that does not saturate. TRL averages the log-probabilities over the response
  tokens first; pass ``sequence_logprobs(..., average=True)`` to do the same.

**DPO + NLL** (RPO; Pang et al., 2024, "Iterative Reasoning Preference Optimization"). DPO
only pushes the *difference* of the log-ratios up; both likelihoods can fall together, and a
small model's greedy answers then get worse. Adding ``α · NLL`` of the chosen responses,
``NLL = −Σ_i log π_θ(y_w,i|x_i) / Σ_i |y_w,i|`` (mean over every chosen response token in the
batch, :func:`chosen_nll`), anchors the chosen likelihood. TRL 1.x spells it
``loss_type=["sigmoid", "sft"], loss_weights=[1, α]`` (older TRL: ``rpo_alpha=α``).

**Bradley–Terry** reward-model loss: ``P(y_w ≻ y_l) = σ(r(x, y_w) − r(x, y_l))``, trained with
``−log σ(r_w − r_l)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_utils import checks

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor,
                      average: bool = False) -> torch.Tensor:
    """Summed (or, with ``average=True``, mean) log-probability of the response tokens per sequence.

    Args:
        logits: ``(batch, seq, vocab)`` model outputs.
        labels: ``(batch, seq)`` token ids (the input ids; masked positions may hold -100).
        loss_mask: ``(batch, seq)``, same shape as ``labels``; nonzero marks response tokens.
    The function shifts by one position itself (logits ``[:, :-1]`` score labels ``[:, 1:]``),
    so a mark on position 0 is ignored: nothing predicts the first token.

    Returns: ``(batch,)`` tensor in the logits' floating dtype (float32 at least).

    Raises:
        ValueError: shapes do not match, a row has no response token after the shift, or a
            response position holds an id outside ``[0, vocab)``.
    """
    checks.tensor("logits", logits, ndim=3, shape="(batch, seq, vocab)")
    checks.same_shape(**{"labels": labels, "loss_mask": loss_mask, "logits[..., 0]": logits[..., 0]})
    if labels.shape[1] < 2:
        raise ValueError("sequences need at least 2 positions (one to predict from, one to score)")
    target = labels[:, 1:]
    mask = loss_mask[:, 1:].bool()
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"loss_mask rows {empty} mark no response token after the one-position shift; "
                         "every sequence needs at least one scored token")
    vocab = logits.shape[-1]
    if ((target[mask] < 0) | (target[mask] >= vocab)).any():
        raise ValueError(f"labels at masked-in positions must be token ids in [0, {vocab})")
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    token_logp = token_logp * mask
    total = token_logp.sum(dim=1)
    return total / mask.sum(dim=1) if average else total


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards → ``(losses, chosen_rewards, rejected_rewards)``.

    All four inputs are per-sequence log-probabilities of the same shape (``(batch,)``).
    ``chosen_rewards = β (π_chosen − ref_chosen)`` (detached), likewise for rejected;
    the loss is a function of ``h = chosen_rewards − rejected_rewards`` (see the module doc).
    Take ``.mean()`` of ``losses`` for the batch loss.

    Raises:
        ValueError: ``beta <= 0``, ``label_smoothing`` outside [0, 0.5), an unknown
            ``loss_type``, label smoothing with a loss other than ``"sigmoid"``, or inputs
            of different shapes.
    """
    checks.same_shape(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                      reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    checks.positive_number(beta=beta)
    checks.number("label_smoothing", label_smoothing, low=0.0, high=0.5, high_open=True)
    checks.one_of("loss_type", loss_type, DPO_LOSS_TYPES)
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type='sigmoid' only, got loss_type={loss_type!r}")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    logits = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * logits)
                  - label_smoothing * F.logsigmoid(-beta * logits))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:  # ipo
        losses = (logits - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def chosen_nll(policy_chosen_logps: torch.Tensor, chosen_token_counts: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood of the chosen responses, ``−Σ logps / Σ counts``.

    Args:
        policy_chosen_logps: ``(batch,)`` summed response log-probs (from :func:`sequence_logprobs`).
        chosen_token_counts: ``(batch,)`` number of response tokens each sum covers (≥ 1).

    This is TRL's ``"sft"`` loss term, the ``α · NLL`` of RPO (see the module doc).
    """
    checks.same_shape(policy_chosen_logps=policy_chosen_logps, chosen_token_counts=chosen_token_counts)
    checks.non_empty("policy_chosen_logps", policy_chosen_logps)
    if (chosen_token_counts < 1).any():
        raise ValueError("chosen_token_counts must all be >= 1 (each response has at least one token)")
    return -policy_chosen_logps.sum() / chosen_token_counts.sum()


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Mean ``−log σ(r_chosen − r_rejected)`` over the pairs (the reward-model loss)."""
    checks.same_shape(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    checks.non_empty("chosen_rewards", chosen_rewards)
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def preference_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Fraction of pairs where the chosen score is strictly higher."""
    checks.same_shape(chosen_scores=chosen_scores, rejected_scores=rejected_scores)
    return (chosen_scores > rejected_scores).float().mean().item()
