"""Fine-tuning and alignment: chat formatting with masked labels, LoRA from scratch, DPO/IPO/hinge,
Bradley–Terry reward loss, PPO pieces, and the course's checkable datasets (chapters 05 and 06)."""

from course_utils.alignment.chat import (
    IGNORE_INDEX,
    format_llama2,
    pad_batch,
    split_prompt_response,
    tokenize_for_sft,
)
from course_utils.alignment.data import (
    SYSTEM_PROMPT,
    extract_integer,
    judge,
    load_preferences,
    load_sft,
    prompt_text,
    score_responses,
    win_rate,
)
from course_utils.alignment.lora import (
    LoRALinear,
    apply_lora,
    count_parameters,
    lora_layers,
    lora_parameter_count,
    merge_lora,
)
from course_utils.alignment.losses import (
    bradley_terry_loss,
    chosen_nll,
    dpo_loss,
    preference_accuracy,
    sequence_logprobs,
)
from course_utils.alignment.ppo import (
    adaptive_kl_coef,
    gae,
    kl_penalty,
    masked_mean,
    ppo_clip_loss,
    shaped_rewards,
    value_loss,
    whiten,
)

__all__ = [
    "IGNORE_INDEX", "SYSTEM_PROMPT", "LoRALinear", "adaptive_kl_coef", "apply_lora", "bradley_terry_loss", "chosen_nll",
    "count_parameters",
    "dpo_loss", "extract_integer", "format_llama2", "gae", "judge", "kl_penalty", "load_preferences", "load_sft",
    "lora_layers", "lora_parameter_count", "masked_mean", "merge_lora", "pad_batch", "ppo_clip_loss",
    "preference_accuracy", "prompt_text", "score_responses", "sequence_logprobs", "shaped_rewards",
    "split_prompt_response", "tokenize_for_sft", "value_loss", "whiten", "win_rate",
]
