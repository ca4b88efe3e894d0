"""The pieces of PPO for RLHF (Schulman et al., 2017; Ouyang et al., 2022).

* **KL penalty** to the reference policy, per token: ``k1 = log π(a) − log π_ref(a)``
  (unbiased, can be negative) or ``k3 = (ρ − 1) − log ρ`` with ``ρ = π_ref(a)/π(a)``
  (unbiased, always ≥ 0; used by GRPO).
* **Reward shaping**: per-token reward ``r_t = −β_KL · kl_t``, plus the sequence score
  (reward model or rule) added on the last response token.
* **Adaptive KL coefficient** (Ziegler et al., 2019): with target ``KL*``,
  ``e = clip(KL / KL* − 1, −0.2, 0.2)`` and ``β_KL ← β_KL · (1 + K · e)``: the penalty grows
  while the policy is further from the reference than the target and shrinks when closer.
* **GAE** (generalised advantage estimation): ``δ_t = r_t + γ V_{t+1} − V_t`` and
  ``A_t = δ_t + γ λ A_{t+1}`` (``V_T = 0`` after the last step); returns ``R_t = A_t + V_t``.
* **Clipped surrogate**: with ``ρ_t = exp(log π_θ − log π_old)``,
  ``L = −E[min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t)]``.
* **Value loss**: ``½ E[max((V − R)², (V_clip − R)²)]`` with
  ``V_clip = V_old + clip(V − V_old, −ε_v, ε_v)``.

GRPO (DeepSeekMath) drops the value network: it samples a group of responses per prompt and
uses the group-normalised score ``(s − mean) / std`` as every token's advantage, with the k3
KL term added to the loss instead of the reward.
"""

from __future__ import annotations

import torch

from course_utils import checks


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is nonzero (all of them when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    checks.same_shape(values=values, mask=mask)
    mask = mask.to(values.dtype)
    count = mask.sum()
    if count == 0:
        raise ValueError("mask selects no element")
    return (values * mask).sum() / count


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference from sampled-token log-probs."""
    checks.same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    checks.one_of("kind", kind, ("k1", "k3"))
    if kind == "k1":
        return logprobs - ref_logprobs
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - 1 - log_ratio


def shaped_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                   mask: torch.Tensor, kl_coef: float = 0.1) -> torch.Tensor:
    """Per-token RLHF rewards ``−kl_coef · (log π − log π_ref)``, plus each sequence's score on its
    last response token. ``scores``: ``(batch,)``; the others ``(batch, T)``; ``mask`` marks the
    response tokens (each row needs at least one)."""
    checks.same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    checks.tensor("logprobs", logprobs, ndim=2, shape="(batch, T)")
    checks.same_shape(**{"scores": scores, "logprobs[:, 0]": logprobs[:, 0]})
    checks.number("kl_coef", kl_coef, low=0)
    mask = mask.to(logprobs.dtype)
    lengths = mask.sum(dim=1).long()
    if (lengths == 0).any():
        raise ValueError("every row of mask needs at least one response token")
    rewards = -kl_coef * kl_penalty(logprobs, ref_logprobs) * mask
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


def adaptive_kl_coef(kl_coef: float, observed_kl: float, target: float, rate: float = 1.0) -> float:
    """Next KL coefficient of the proportional controller: ``kl_coef · (1 + rate · e)`` with
    ``e = clip(observed_kl / target − 1, −0.2, 0.2)``. TRL's old ``AdaptiveKLController``
    uses ``rate = n_steps / horizon``; a short loop needs a larger ``rate`` (1 = up to ±20 %
    per update)."""
    checks.positive_number(kl_coef=kl_coef, target=target)
    checks.number("rate", rate, low=0, high=5, low_open=True)
    error = min(max(observed_kl / target - 1, -0.2), 0.2)
    return kl_coef * (1 + rate * error)


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns → ``(advantages, returns)``, shape ``(..., T)``.

    ``δ_t = r_t + γ V_{t+1} − V_t``, ``A_t = δ_t + γλ A_{t+1}``, with ``V`` and ``A`` zero after
    the last step. With ``mask`` (1 = real step), masked steps are skipped: they neither
    receive advantage nor pass value/advantage through (right padding).
    """
    checks.same_shape(rewards=rewards, values=values)
    checks.probability("gamma", gamma)
    checks.probability("lam", lam)
    if mask is None:
        mask = torch.ones_like(rewards)
    checks.same_shape(rewards=rewards, mask=mask)
    mask = mask.to(rewards.dtype)
    steps = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[..., 0])
    next_adv = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(steps)):
        m = mask[..., t]
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        adv = delta + gamma * lam * next_adv
        advantages[..., t] = adv * m
        next_value = torch.where(m.bool(), values[..., t], next_value)
        next_adv = torch.where(m.bool(), adv, next_adv)
    returns = advantages + values * mask
    return advantages, returns


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  clip_eps: float = 0.2, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss and the fraction of tokens where clipping was active."""
    checks.same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    checks.positive_number(clip_eps=clip_eps)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped < unclipped).to(logprobs.dtype), mask)
    return loss, clipfrac.detach()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip_eps: float | None = 0.2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``½ E[max((V − R)², (V_clip − R)²)]``; ``clip_eps=None`` gives plain ``½ E[(V − R)²]``."""
    checks.same_shape(values=values, old_values=old_values, returns=returns)
    err = (values - returns) ** 2
    if clip_eps is not None:
        checks.positive_number(clip_eps=clip_eps)
        v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err = torch.max(err, (v_clip - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the (masked) elements."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) / torch.sqrt(var + eps)
    return out if mask is None else out * mask.to(values.dtype)
