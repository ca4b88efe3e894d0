"""Chapter 11, serving: a paged-KV, continuous-batching engine written from scratch on the
offline model, an OpenAI-compatible gateway (``course_utils.serving.api``) in front of it or of a
real vLLM server (``course_utils.serving.vllm_server``), and the metrics a load test reports.

* :mod:`~course_utils.serving.blocks`: block allocator (free list, refcounts), block tables,
  prefix caching by block hash, copy-on-write;
* :mod:`~course_utils.serving.paged_attention`: the paged KV cache and attention through block tables;
* :mod:`~course_utils.serving.scheduler`: iteration-level scheduling (continuous batching, chunked
  prefill, preemption by recompute);
* :mod:`~course_utils.serving.engine`: :class:`LLMEngine` ties them to a transformers model;
* :mod:`~course_utils.serving.metrics`: TTFT, TPOT, throughput, KV utilisation.
"""

from course_utils.serving.blocks import BlockAllocator, BlockTable, NoFreeBlocksError, block_hash
from course_utils.serving.engine import EngineConfig, LLMEngine, StepOutput, encode_prompt
from course_utils.serving.metrics import (
    kv_utilisation,
    latency_summary,
    percentile,
    request_latencies,
    reservation_waste,
)
from course_utils.serving.paged_attention import PagedKVCache, PagedLlama, block_slots, paged_attention
from course_utils.serving.scheduler import FinishReason, Request, SamplingParams, ScheduledChunk, Scheduler
from course_utils.serving.timeline import IDLE, WASTED, continuous_slots, static_slots

__all__ = [
    "BlockAllocator", "BlockTable", "EngineConfig", "FinishReason", "LLMEngine", "NoFreeBlocksError",
    "PagedKVCache", "PagedLlama", "Request", "SamplingParams", "ScheduledChunk", "Scheduler", "StepOutput",
    "block_hash", "block_slots", "encode_prompt", "kv_utilisation", "latency_summary", "paged_attention",
    "percentile", "request_latencies", "reservation_waste", "IDLE", "WASTED", "continuous_slots", "static_slots",
]
