"""Claims are tests: the bounds each notebook's recorded metrics must meet.

``claims/<notebook stem>.toml`` holds one entry per metric the notebook records with
``record_metric``::

    from_hf_logits_max_abs_diff = { max = 1e-5, why = "our LLaMA equals transformers' to float32 rounding" }
    finetuned_strict = { gt = "base_strict", mode = "full" }

Keys: ``min``/``max`` (inclusive) and ``gt``/``lt`` (strict), each a number or the name of another
metric of the same run; ``mode`` is ``"both"`` (default), ``"smoke"`` or ``"full"``; ``why`` says
what the bound protects. The notebook test checks the claims that apply in SMOKE mode; ``llm-course
run --full`` checks the full-mode ones and marks a broken claim in the report (the notebook fails).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from course_utils.runtime import repo_root

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_KEYS = {"min", "max", "gt", "lt", "mode", "why"}
_OPS = {"min": (">=", lambda v, b: v >= b), "max": ("<=", lambda v, b: v <= b),
        "gt": (">", lambda v, b: v > b), "lt": ("<", lambda v, b: v < b)}


@dataclass
class ClaimResult:
    metric: str
    ok: bool
    value: Any
    bound: str  # e.g. "<= 1e-05" or "> base_strict (0.0)"
    mode: str
    why: str = ""
    problem: str = ""  # why it failed, when it did


def claims_file(notebook: str | Path, root: Path | None = None) -> Path:
    """``claims/<stem>.toml`` for a notebook path or stem."""
    return (root or repo_root()) / "claims" / f"{Path(notebook).stem}.toml"


def load_claims(notebook: str | Path, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The claims of one notebook (metric → spec); {} when it has no claims file. Checks the specs."""
    path = claims_file(notebook, root)
    if not path.exists():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    for metric, spec in data.items():
        if not isinstance(spec, dict) or not spec.keys() & _OPS.keys():
            raise ValueError(f"{path}: claim {metric!r} needs at least one of min/max/gt/lt, got {spec!r}")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ValueError(f"{path}: claim {metric!r} has unknown keys {sorted(unknown)}; allowed {sorted(_KEYS)}")
        if spec.get("mode", "both") not in ("both", "smoke", "full"):
            raise ValueError(f"{path}: claim {metric!r} mode must be both, smoke or full, got {spec['mode']!r}")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def check_claims(notebook: str | Path, metrics: dict[str, Any], *, smoke: bool,
                 root: Path | None = None) -> list[ClaimResult]:
    """Check the claims that apply in this mode against a run's metrics."""
    results = []
    for metric, spec in load_claims(notebook, root).items():
        mode = spec.get("mode", "both")
        if mode != "both" and (mode == "smoke") != smoke:
            continue
        value = metrics.get(metric)
        parts, problems = [], []
        for key, (sym, op) in _OPS.items():
            if key not in spec:
                continue
            bound = spec[key]
            if isinstance(bound, str):
                other = _number(metrics.get(bound))
                shown = f"{sym} {bound} ({other:.4g})" if other is not None else f"{sym} {bound} (not recorded)"
                if other is None:
                    problems.append(f"the run recorded no number for {bound!r}")
                    parts.append(shown)
                    continue
            else:
                other, shown = float(bound), f"{sym} {bound:g}"
            parts.append(shown)
            v = _number(value)
            if v is None:
                problems.append("the run recorded no number for it" if value is None else f"{value!r} is not a number")
            elif math.isnan(v) or not op(v, other):
                problems.append(f"{value!r} is not {shown}")
        results.append(ClaimResult(metric, not problems, value, " and ".join(parts), mode,
                                   spec.get("why", ""), "; ".join(dict.fromkeys(problems))))
    return results


def as_dicts(results: list[ClaimResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
