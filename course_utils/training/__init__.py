"""Training at scale (chapter 04): ZeRO memory accounting, DDP/ZeRO-1/FSDP2 on real process groups,
collective counting, gradient checkpointing, mixed precision, FlashAttention's tiling, MFU, and the
launch path (torchrun, Slurm, DeepSpeed and accelerate configs)."""

from course_utils.training.attention import (
    attention_peak_memory,
    naive_attention,
    online_softmax,
    tiled_attention,
    tiled_attention_backward,
    tiled_attention_forward,
    time_attention,
)
from course_utils.training.checkpointing import measure_checkpointing
from course_utils.training.comm import KINDS, VOLUME_FACTOR, CommCounter, classify, ring_bytes_sent
from course_utils.training.distributed import (
    STAGE_AT_REST,
    STRATEGIES,
    StrategyResult,
    TrainConfig,
    build_model,
    comm_volume,
    expected_comm_volume,
    expected_model_bytes,
    gloo_avg_is_correct,
    init_process_group,
    relative_gap,
    train_strategy,
)
from course_utils.training.launch import (
    launch_file,
    torchrun,
    validate_accelerate_config,
    validate_deepspeed_config,
)
from course_utils.training.memory import (
    GB,
    PRECISIONS,
    ZERO_STAGES,
    ModelStateBytes,
    PeakMemory,
    activation_bytes_per_layer,
    checkpointed_activation_bytes,
    local_tensor,
    model_state_bytes,
    optimizer_state_tensors,
    peak_memory,
    saved_activation_bytes,
    tensor_bytes,
    zero_table,
)
from course_utils.training.mfu import matmul_params, matmul_peak_flops, mfu, training_flops_per_token
from course_utils.training.precision import (
    FP16_SMALLEST,
    PRECISION_MODES,
    activation_gradients,
    fp16_underflow,
    train_steps,
)
from course_utils.training.zero import (
    partition_parameters,
    run_zero1,
    run_zero1_cases,
    single_process_adamw,
    zero1_step,
)

__all__ = [
    "FP16_SMALLEST", "GB", "KINDS", "PRECISIONS", "PRECISION_MODES", "STAGE_AT_REST", "STRATEGIES", "VOLUME_FACTOR",
    "ZERO_STAGES", "CommCounter", "ModelStateBytes", "PeakMemory", "StrategyResult", "TrainConfig",
    "activation_bytes_per_layer", "activation_gradients", "attention_peak_memory", "build_model",
    "checkpointed_activation_bytes", "classify", "comm_volume", "expected_comm_volume", "expected_model_bytes",
    "fp16_underflow", "gloo_avg_is_correct", "init_process_group", "launch_file", "local_tensor", "matmul_params",
    "matmul_peak_flops", "measure_checkpointing", "mfu", "model_state_bytes", "naive_attention", "online_softmax",
    "optimizer_state_tensors", "partition_parameters", "peak_memory", "relative_gap", "ring_bytes_sent",
    "run_zero1", "run_zero1_cases", "saved_activation_bytes", "single_process_adamw", "tensor_bytes", "tiled_attention", "tiled_attention_backward",
    "tiled_attention_forward", "time_attention", "torchrun", "train_steps", "train_strategy",
    "training_flops_per_token", "validate_accelerate_config", "validate_deepspeed_config", "zero1_step",
    "zero_table",
]
