"""The grading pieces on their own: observations, the judge, feedback redaction, the redacted
package, plagiarism flags and the sandbox command (the whole pipeline is tested in tests/labs)."""

from __future__ import annotations

import ast
import json
import math

import nbformat
import numpy as np
import pytest
import torch

from course_utils.tooling import hidden
from course_utils.tooling.grading import feedback, judge, plagiarism, reference
from course_utils.tooling.grading.sandbox import Limits, SandboxSpec, bwrap_command


def _records(monkeypatch, fn):
    """Run ``fn`` with grading on and return the records it emitted."""
    emitted = []
    monkeypatch.setenv(hidden.GRADING_ENV, "1")
    monkeypatch.setattr(hidden, "_emit", emitted.append)
    fn()
    return json.loads(json.dumps(emitted))  # what leaves the kernel is plain JSON


def test_checks_do_nothing_outside_grading(monkeypatch, capsys):
    monkeypatch.delenv(hidden.GRADING_ENV, raising=False)
    hidden.check("x", torch.ones(2))
    hidden.check_raises("y", int, "3")
    assert capsys.readouterr().out == ""


def test_encode_is_exact_for_every_float_dtype():
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        x = (torch.randn(3, 5) * 100).to(dtype)
        x[0, 0] = float("inf")
        got = judge._decode(hidden.encode(x))
        assert got[1] == str(dtype) and np.array_equal(got[2], x.double().numpy())
    assert judge._decode(hidden.encode([1, 2.5, float("nan"), "a", None, True]))[2] != judge._decode(0)
    with pytest.raises(TypeError, match="cannot observe"):
        hidden.encode(object())


def test_judge_compares_values_with_the_reference_tolerances(monkeypatch):
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    want = _records(monkeypatch, lambda: hidden.check("x", x))[0]
    close = _records(monkeypatch, lambda: hidden.check("x", x + 1e-7, atol=100))[0]  # the student's tolerance is ignored
    far = _records(monkeypatch, lambda: hidden.check("x", x + 1e-3, atol=100))[0]
    wrong_dtype = _records(monkeypatch, lambda: hidden.check("x", x.double()))[0]
    wrong_shape = _records(monkeypatch, lambda: hidden.check("x", x.T))[0]
    assert judge.record_matches(close, want)
    assert not judge.record_matches(far, want)
    assert not judge.record_matches(wrong_dtype, want) and not judge.record_matches(wrong_shape, want)
    exact = _records(monkeypatch, lambda: hidden.check("x", x, exact=True))[0]
    assert not judge.record_matches(close, exact)
    alt = _records(monkeypatch, lambda: hidden.check("x", x, alternatives=[x + 1]))[0]
    shifted = _records(monkeypatch, lambda: hidden.check("x", x + 1))[0]
    assert judge.record_matches(shifted, alt) and not judge.record_matches(shifted, want)


def test_judge_raises_and_bounds(monkeypatch):
    def bad(t):
        if t <= 0:
            raise ValueError(f"temperature must be > 0, got {t}")
        return t

    want = _records(monkeypatch, lambda: hidden.check_raises("t", bad, -1, exc=ValueError, match="temperature"))[0]
    assert judge.reference_problems([want]) == []
    assert judge.record_matches(want, want)
    silent = _records(monkeypatch, lambda: hidden.check_raises("t", lambda t: t, -1))[0]
    wrong_kind = _records(monkeypatch, lambda: hidden.check_raises("t", math.sqrt, -1))[0]  # ValueError, no match
    assert not judge.record_matches(silent, want) and not judge.record_matches(wrong_kind, want)
    bound = _records(monkeypatch, lambda: hidden.check_bound("n", 3, low=0, high=4))[0]
    assert judge.record_matches(bound, bound)
    assert not judge.record_matches(_records(monkeypatch, lambda: hidden.check_bound("n", 5))[0], bound)
    forged = dict(bound, spec={"low": None, "high": None}, value=99)  # a student's spec is never read
    assert not judge.record_matches(forged, bound)


def test_judge_cell_needs_every_reference_check(monkeypatch):
    want = _records(monkeypatch, lambda: [hidden.check("a", 1), hidden.check("b", 2.0)])
    assert judge.judge_cell(want, want) == (0, 2)
    assert judge.judge_cell(want[:1], want) == (1, 2)  # a skipped check fails
    forged = [*want, dict(want[1], value=3.0)]  # a second record under the same name must agree too
    assert judge.judge_cell(forged, want) == (1, 2)
    assert judge.judge_cell([{"name": "a", "kind": "value", "value": {"__array__": "junk"}}], want[:1]) == (1, 1)


def _graded_notebook():
    nb = nbformat.v4.new_notebook()
    test = nbformat.v4.new_code_cell("assert f(1) == 1\n### BEGIN HIDDEN TESTS\nhidden.check('secret case', f(12345))\n"
                                     "### END HIDDEN TESTS")
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 1}
    test.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hidden.check('secret case', f(12345))\n")]
    early = nbformat.v4.new_code_cell("print('before')")
    early.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                            text="ok\nhidden.check('secret case', f(12345))\n")]
    late = nbformat.v4.new_code_cell("print(In)")
    late.outputs = [nbformat.v4.new_output("stream", name="stdout", text="anything at all")]
    nb.cells = [early, test, late]
    return nb


def test_feedback_withholds_everything_after_the_first_hidden_test():
    nb = feedback.hide_hidden_tests(_graded_notebook())
    text = nbformat.writes(nb)
    assert "secret case" not in text and "12345" not in text
    assert "About this feedback" in nb.cells[0].source
    early, test, late = nb.cells[1:]
    assert early.outputs[0]["text"].startswith("ok")  # shown, with the hidden line removed
    assert "Test passed" in test.outputs[0]["text"]
    assert "Output withheld" in late.outputs[0]["text"]
    unsandboxed = feedback.hide_hidden_tests(_graded_notebook(), sandboxed=False)
    assert "Output withheld" in unsandboxed.cells[1].outputs[0]["text"]


def test_feedback_names_only_builtin_errors():
    nb = _graded_notebook()
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="hidden_check_secret_case", evalue="x", traceback=[])]
    nb = feedback.hide_hidden_tests(nb)
    assert "secret" not in nb.cells[2].outputs[0]["text"] and "an error" in nb.cells[2].outputs[0]["text"]


def test_redacted_package_blocks_exactly_the_references(tmp_path):
    import course_utils

    blocked = ["course_utils.generation.top_k_filter", "course_utils.arch.attention.GroupedQueryAttention.forward"]
    pkg = reference.redact_package(__import__("pathlib").Path(course_utils.__file__).parent, tmp_path, blocked, "labX")
    gen = (pkg / "generation.py").read_text()
    tree = ast.parse(gen)
    top_k = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "top_k_filter")
    assert ast.get_docstring(top_k)  # the docstring (the math) stays
    assert "ReferenceBlockedError" in ast.unparse(top_k) and "topk" not in ast.unparse(top_k.body[1:])
    top_p = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "top_p_filter")
    assert "ReferenceBlockedError" not in ast.unparse(top_p)
    assert not list(pkg.rglob("*.pyc"))
    ns: dict = {}
    exec(compile(gen, "generation.py", "exec"), ns)
    from course_utils.tooling.grading.blocked import ReferenceBlockedError

    with pytest.raises(ReferenceBlockedError, match="labX"):
        ns["top_k_filter"](torch.zeros(3), 1)


def test_expected_notebook_rebinds_the_students_functions():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("def apply_rotary(x, p):\n    return x\n")
    cell.metadata["nbgrader"] = {"solution": True, "grade_id": "impl"}
    nb.cells = [cell]
    path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "lab.ipynb"
    nbformat.write(nb, path)
    out = reference.expected_notebook(path, {"apply_rotary": "course_utils.arch.rope.apply_rope_at"})
    assert out.cells[0].source.endswith("from course_utils.arch.rope import apply_rope_at as apply_rotary")


def test_plagiarism_flags_copies_with_names_erased():
    original = '''
def top_k(logits, k):
    """doc"""
    if k < 1:
        raise ValueError("k")
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)
'''
    renamed = original.replace("logits", "z").replace("kth", "t").replace('"doc"', '"mine"').replace("top_k(", "f(")
    different = original.replace("logits < kth", "logits <= kth")
    known = plagiarism.fingerprints({"ref": original})
    assert plagiarism.flags_for({"impl": renamed}, known) == ["impl: f matches ref with names erased"]
    assert plagiarism.flags_for({"impl": different}, known) == []
    assert "runs or decodes hidden code (b64decode, exec)" in plagiarism.flags_for(
        {"impl": "import base64\nexec(base64.b64decode('eA=='))"}, {})[0]


def test_sandbox_command_shows_only_what_it_binds(tmp_path):
    spec = SandboxSpec(workdir=str(tmp_path / "autograded" / "s"), scratch=str(tmp_path / "scratch"),
                       runtime_dir=str(tmp_path / "rt"), cache_dir=str(tmp_path / "cache"),
                       package_dir="/course/course_utils", package_copy=str(tmp_path / "redacted" / "course_utils"),
                       env={"A": "1"}, uid=61234, limits=Limits())
    cmd = bwrap_command(spec, ["python", "-m", "ipykernel_launcher"])
    joined = " ".join(cmd)
    assert "--unshare-net" in cmd and "--unshare-pid" in cmd and "--clearenv" in cmd
    assert f"--ro-bind {tmp_path}/redacted/course_utils /course/course_utils" in joined
    assert f"--bind {tmp_path}/scratch {tmp_path}/autograded/s" in joined
    assert "--reuid=61234" in joined and "--setenv A 1" in joined
    mounts = [cmd[i + 2] for i, a in enumerate(cmd) if a in ("--bind", "--ro-bind", "--ro-bind-try")]
    assert [m for m in mounts if m.startswith("/course")] == ["/course/course_utils"]  # nothing else of the course


def test_kernel_sockets_get_a_short_folder_however_deep_the_grading_folder(tmp_path):
    """ZeroMQ's ipc socket paths must stay under the 107-byte unix socket limit (a deep --work-dir
    or a long student id once made the kernel unreachable)."""
    from course_utils.tooling.grading.autograde import _remove_runtime, _sandbox_dirs

    deep = tmp_path / ("d" * 60) / ("student_with_a_rather_long_identifier_" * 2) / "sandbox"
    dirs = _sandbox_dirs(deep, None, None)
    try:
        assert len(str(dirs["runtime"] / "kernel-ipc-4")) < 60 and dirs["runtime"].is_dir()
        assert all(dirs[name].is_relative_to(deep) for name in ("scratch", "cache", "jupyter"))
    finally:
        _remove_runtime(dirs)
    assert not dirs["runtime"].exists()
