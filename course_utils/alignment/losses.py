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


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ``TypeError`` naming any argument that is not a tensor, and ``ValueError`` listing
    every argument's shape when they differ."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{', '.join(shapes)} must all have the same shape, got {shapes}")

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
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be a (batch, seq, vocab) tensor, got shape "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape (batch, seq) = {tuple(logits.shape[:2])}, got "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if not isinstance(loss_mask, torch.Tensor) or loss_mask.shape != labels.shape:
        raise ValueError(f"loss_mask must have the shape of labels {tuple(labels.shape)}, got "
                         f"{tuple(getattr(loss_mask, 'shape', ()))}")
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
    check_same_shape(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                     reference_chosen_logps=reference_chosen_logps, reference_rejected_logps=reference_rejected_logps)
    if not isinstance(beta, (int, float)) or beta <= 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: expected one of {DPO_LOSS_TYPES}")
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
    check_same_shape(policy_chosen_logps=policy_chosen_logps, chosen_token_counts=chosen_token_counts)
    if policy_chosen_logps.numel() == 0:
        raise ValueError("policy_chosen_logps is empty")
    if (chosen_token_counts < 1).any():
        raise ValueError("chosen_token_counts must all be >= 1 (each response has at least one token)")
    return -policy_chosen_logps.sum() / chosen_token_counts.sum()


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Mean ``−log σ(r_chosen − r_rejected)`` over the pairs (the reward-model loss)."""
    if not isinstance(chosen_rewards, torch.Tensor) or not isinstance(rejected_rewards, torch.Tensor):
        raise TypeError("chosen_rewards and rejected_rewards must be torch tensors")
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen_rewards {tuple(chosen_rewards.shape)} and rejected_rewards "
                         f"{tuple(rejected_rewards.shape)} must have the same shape")
    if chosen_rewards.numel() == 0:
        raise ValueError("chosen_rewards is empty")
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def preference_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Fraction of pairs where the chosen score is strictly higher."""
    if chosen_scores.shape != rejected_scores.shape:
        raise ValueError("chosen_scores and rejected_scores must have the same shape")
    return (chosen_scores > rejected_scores).float().mean().item()
