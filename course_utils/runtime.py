"""Run-time knobs shared by every notebook: SMOKE mode, device choice, seeding, metrics.

A notebook's ``parameters`` cell sets ``SMOKE = None`` and ``DEVICE = "auto"``; papermill
may inject other values. The setup cell then calls :func:`resolve_smoke` and
:func:`resolve_device`, so that

* ``SMOKE=None`` follows the ``LLM_COURSE_SMOKE`` environment variable (how nbgrader's
  autograder, which cannot inject parameters, runs labs small), and
* ``DEVICE="auto"`` picks CUDA, then Apple's MPS, then the CPU.

Metrics a notebook measured are recorded with :func:`record_metric`. When the course
runner executes a notebook it sets ``LLM_COURSE_METRICS_FILE``; each metric is appended
there as one JSON line, and the run report shows them.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from course_utils import checks

# Every environment variable the course reads, in one place.
SMOKE_ENV = "LLM_COURSE_SMOKE"  # 1/0: tiny sizes (CI, the autograder) or full runs
METRICS_ENV = "LLM_COURSE_METRICS_FILE"  # set by the runner: where record_metric appends
CACHE_ENV = "LLM_COURSE_CACHE"  # converted models and embedding caches
ROOT_ENV = "LLM_COURSE_ROOT"  # the course folder (with notebooks/ and solutions/)
GRADING_ENV = "LLM_COURSE_GRADING"  # set in a student's kernel while `llm-course grade` grades it
VLLM_VENV_ENV = "LLM_COURSE_VLLM_VENV"  # the separate venv holding vLLM (install.sh --with-vllm)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

_metrics: dict[str, Any] = {}


def resolve_smoke(smoke: bool | None = None) -> bool:
    """Return the SMOKE flag: ``smoke`` if given, else the ``LLM_COURSE_SMOKE`` variable."""
    if smoke is not None:
        if not isinstance(smoke, bool):
            raise TypeError(f"SMOKE must be True, False or None, got {smoke!r}")
        return smoke
    raw = os.environ.get(SMOKE_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{SMOKE_ENV}={raw!r}: expected one of 1/0, true/false, yes/no")


def resolve_device(device: str = "auto") -> str:
    """Map ``"auto"`` to ``"cuda"``, ``"mps"`` or ``"cpu"``; check an explicit choice exists.

    Raises:
        ValueError: ``device`` is not a device name torch knows.
        RuntimeError: the requested accelerator is not available on this machine.
    """
    import torch

    checks.instance("device (such as 'auto', 'cpu' or 'cuda')", device, str)
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a torch device; pass 'auto', 'cpu', 'cuda' or 'mps'") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}); pass device='cpu' or 'auto', or install a CUDA build of torch"
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device={device!r} was requested but MPS is not available; pass 'cpu' or 'auto'")
    return device


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible run."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seeds the legacy global RNG that libraries still use)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)`` and restore the previous
    count afterwards, even on error. ``None`` leaves the count as it is."""
    if num_threads is not None:
        checks.positive_int(num_threads=num_threads)
    import torch

    saved = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def set_notebook_threads(requested: int | None, smoke: bool, device: str) -> int:
    """Set torch's thread count for the rest of a notebook and return the count in effect:
    ``requested`` when given; otherwise 1 in SMOKE mode on a CPU, where CI's shared 2-core
    machines make two OpenMP threads wait on each other (measured on notebook 08: 285 s with
    2 threads, 65 s with 1); otherwise torch's default."""
    import torch

    if requested is not None:
        checks.positive_int(TORCH_THREADS=requested)
        torch.set_num_threads(requested)
    elif smoke and device == "cpu":
        torch.set_num_threads(1)
    return torch.get_num_threads()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # a numpy or torch scalar
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        value = float(value) if not isinstance(value, numbers.Integral) else int(value)
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    raise TypeError(f"metric value must be a number, bool or string, got {type(value).__name__}")


def record_metric(name: str, value: Any, *, quiet: bool = False) -> Any:
    """Record one measured number under ``name`` for the run report, and return it.

    The value is printed (unless ``quiet``), kept in :func:`recorded_metrics`, and when the
    course runner set ``LLM_COURSE_METRICS_FILE`` appended to that file as a JSON line.
    """
    checks.string("name (the metric's name)", name, non_empty=True)
    clean = _jsonable(value)
    _metrics[name] = clean
    path = os.environ.get(METRICS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"name": name, "value": clean}) + "\n")
    if not quiet:
        shown = f"{clean:.4g}" if isinstance(clean, float) else clean
        print(f"[metric] {name} = {shown}")
    return value


def recorded_metrics() -> dict[str, Any]:
    """The metrics recorded in this process so far (name → value)."""
    return dict(_metrics)


def read_metrics_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a metrics file written by :func:`record_metric`; later values win."""
    out: dict[str, Any] = {}
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["name"]] = row["value"]
    return out


def repo_root() -> Path:
    """The course folder: the one holding ``notebooks/`` and ``solutions/`` (``$LLM_COURSE_ROOT``
    overrides); searched from the working directory up, then beside this package."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).resolve()
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]):
        if (base / "notebooks").is_dir() and (base / "solutions").is_dir():
            return base
    raise FileNotFoundError(f"cannot find the course folder (with notebooks/ and solutions/); "
                            f"run from inside it or set {ROOT_ENV}")


def cache_dir() -> Path:
    """Where the course caches converted models and embeddings: ``$LLM_COURSE_CACHE`` or
    ``~/.cache/llm-course``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "llm-course")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup(smoke: bool | None = None, device: str = "auto", *, seed: int = 0, quiet: bool = False) -> tuple[bool, str]:
    """A notebook's setup: resolve SMOKE and the device, seed everything, print the versions.

    Returns ``(smoke, device)``, so a notebook writes ``SMOKE, DEVICE = setup(SMOKE, DEVICE)``.
    """
    import torch

    smoke = resolve_smoke(smoke)
    device = resolve_device(device)
    set_seed(seed)
    if not quiet:
        gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
        print(f"SMOKE={smoke}  DEVICE={device}{gpu}  torch {torch.__version__}  seed {seed}")
    return smoke, device
