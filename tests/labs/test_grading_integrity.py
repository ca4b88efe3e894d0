"""A class of cheating and careless students, graded the way an instructor grades: `llm-course grade`
by its full path, outside any activated environment, two students at a time, each in its sandbox.

Every attack must gain no points, leak no hidden test into feedback or the CSV, change no file
outside its sandbox, and leave every other student's grade right; no process may outlive grading.
"""

from __future__ import annotations

import csv
import hashlib
import html
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from course_utils.tooling.grading import sandbox_status
from course_utils.tooling.grading.reference import lab_references
from tests.conftest import ROOT
from tests.labs import attacks
from tests.labs.helpers import hidden_lines, read, save

pytestmark = pytest.mark.slow
CELL_TIMEOUT = 20
# a kernel that ignores interrupts holds its slot this long (an honest lab00 submission needs ~15-40 s)
STUDENT_TIMEOUT = 200


def llm_course_by_full_path() -> Path:
    path = Path(sys.executable).parent / "llm-course"
    assert path.exists(), f"the llm-course console script is not installed beside {sys.executable}"
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Listener:
    """A TCP server on the host's loopback that records every connection a sandbox makes to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def _processes_of(work: Path) -> list[str]:
    """Processes still running that belong to a grading session's work folder (kernels, sandboxes)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if str(work) in line]


def grade_class(lab: str, students: dict, tmp: Path, *, jobs: int, cell_timeout: int = CELL_TIMEOUT):
    subs = tmp / "submitted"
    for name, nb in students.items():
        save(subs, name, lab, nb)
    out = tmp / "out" / "grades.csv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"  # nothing of the course's environment on PATH
    proc = subprocess.run([str(llm_course_by_full_path()), "grade", lab, "--submissions", str(subs), "--out", str(out),
                           "--work-dir", str(tmp / "work"), "--cell-timeout", str(cell_timeout),
                           "--student-timeout", str(STUDENT_TIMEOUT), "--jobs", str(jobs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["student_id"]: r for r in csv.DictReader(out.open())}
    feedback = {p.parent.parent.name: p.read_text() for p in (out.parent / "feedback").rglob("*.html")}
    return {"rows": rows, "feedback": feedback, "csv": out, "log": proc.stdout + proc.stderr}


def assert_nothing_leaked(graded, solution):
    lines = hidden_lines(solution)
    assert lines
    for student, page in graded["feedback"].items():
        assert "BEGIN HIDDEN TESTS" not in page, student
        text = html.unescape(page)
        for line in lines:
            assert line not in text, f"{student}'s feedback shows the hidden line {line!r}"
    csv_text = graded["csv"].read_text()
    for line in lines:
        assert line not in csv_text


LAB = "lab00_sampling"


@pytest.fixture(scope="module")
def lab00(tmp_path_factory):
    if not sandbox_status()[0]:
        pytest.skip(f"no grading sandbox here: {sandbox_status()[1]}")
    tmp = tmp_path_factory.mktemp("integrity00")
    source = read(ROOT / "solutions" / LAB / f"{LAB}.ipynb")
    solution = attacks.as_student(source)  # the solution's code, as a student would hand it in
    release = read(ROOT / "labs" / LAB / f"{LAB}.ipynb")
    refs = lab_references(ROOT / "solutions" / LAB)
    listener = _Listener()
    wrong_topk = attacks.replace_solution(solution, release, "impl_top_k", """
        k = min(top_k + 1, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, -math.inf)
    """)
    work = tmp / "work"
    sensitive = {"solution": ROOT / "solutions" / LAB / f"{LAB}.ipynb", "git": ROOT / ".git",
                 "submissions": tmp / "submitted", "other_student": tmp / "submitted" / "a_correct" / LAB / f"{LAB}.ipynb",
                 "gradebook": work / "course" / "gradebook.db", "expected": work / "expected.json",
                 "source": work / "course" / "source" / LAB / f"{LAB}.ipynb", "students": work / "students",
                 "autograded": work / "students" / "a_correct" / "course" / "autograded", "out": tmp / "out"}
    writable = {"solution": ROOT / "solutions" / LAB / f"{LAB}.ipynb",
                "package": ROOT / "course_utils" / "generation.py",
                "other_student": tmp / "submitted" / "a_correct" / LAB / f"{LAB}.ipynb",
                "gradebook": work / "course" / "gradebook.db"}
    students = {
        "a_correct": solution,
        "b_empty": release,
        "w_wrong_topk": wrong_topk,
        # the reference, by every route
        "r_import": attacks.import_references(solution, refs),
        "r_importlib": attacks.importlib_references(solution, refs),
        "r_exec_encoded": attacks.exec_encoded_references(solution, refs),
        "r_read_source": attacks.read_reference_source(solution, refs),
        # a wrong top-k, plus tampering with what the tests call
        "t_patch_everything": attacks.add_cell(wrong_topk, attacks.patch_everything(), early=True),
        "t_patch_late": attacks.add_cell(wrong_topk, attacks.patch_everything(), early=False),
        "t_getframe": attacks.replace_solution(solution, release, "impl_top_k", attacks.getframe_tamper()),
        # leaking hidden tests into feedback
        "l_print_history": attacks.add_cell(solution, attacks.LEAK_HISTORY, early=False),
        "l_thread_later": attacks.add_cell(solution, attacks.LEAK_THREAD, early=True),
        "l_caller_source": attacks.replace_solution(solution, release, "impl_temperature", """
            import inspect, sys
            caller = sys._getframe(1)
            source = "".join(inspect.findsource(caller)[0])
            print(source)
            if "hidden" in caller.f_globals:
                raise ValueError(source)
            return logits / temperature
        """),
        # the machine: disk, writes, network, processes, memory, time
        "s_read_disk": attacks.add_cell(solution, attacks.probe_disk(sensitive), early=True),
        "s_write": attacks.add_cell(solution, attacks.probe_writes(writable), early=True),
        "s_network": attacks.add_cell(solution, attacks.probe_network(listener.port), early=True),
        "s_fork_bomb": attacks.add_cell(solution, attacks.FORK_BOMB, early=False),
        "s_giant_alloc": attacks.add_cell(solution, attacks.GIANT_ALLOCATIONS, early=False),
        "s_sleep_in_test": attacks.replace_solution(solution, release, "impl_top_k", """
            if logits.numel() >= 1000:
                import time
                time.sleep(10_000)
            k = min(top_k, logits.shape[-1])
            kth = torch.topk(logits, k, dim=-1).values[..., -1:]
            return logits.masked_fill(logits < kth, -math.inf)
        """),
        "s_sleep_ignoring_interrupts": attacks.replace_solution(solution, release, "impl_top_k", """
            if logits.numel() >= 1000:
                import signal, time
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                time.sleep(10_000)
            k = min(top_k, logits.shape[-1])
            kth = torch.topk(logits, k, dim=-1).values[..., -1:]
            return logits.masked_fill(logits < kth, -math.inf)
        """),
    }
    hashes = {name: _sha(p) for name, p in writable.items() if p.exists()}
    try:
        graded = grade_class(LAB, students, tmp, jobs=2)
    finally:
        listener.close()
    graded.update(solution=source, hashes=hashes, writable=writable, connections=listener.connections,
                  stray=_processes_of(tmp / "work"), refs=refs)
    return graded


def _score(rows, student):
    return float(rows[student]["score"])


def test_honest_students_are_graded_right(lab00):
    rows = lab00["rows"]
    full = float(rows["a_correct"]["max_score"])
    assert full == 10 and _score(rows, "a_correct") == full
    assert _score(rows, "b_empty") == 0
    assert _score(rows, "w_wrong_topk") == 5, rows["w_wrong_topk"]  # temperature (2) and top-p (3) pass
    assert "test_top_k" in rows["w_wrong_topk"]["reason"] and "test_sampling_step" in rows["w_wrong_topk"]["reason"]
    assert all(r["sandbox"] == "bwrap" for r in rows.values())


@pytest.mark.parametrize("student", ["r_import", "r_importlib", "r_exec_encoded", "r_read_source"])
def test_the_reference_earns_nothing(lab00, student):
    row = lab00["rows"][student]
    assert row["status"] == "graded" and _score(lab00["rows"], student) == 0, row
    assert "blocked reference course_utils.generation." in row["reason"], row


def test_hidden_code_is_flagged(lab00):
    assert "runs or decodes hidden code (b64decode, exec)" in lab00["rows"]["r_exec_encoded"]["flags"]
    assert "matches the instructor's solution" in lab00["rows"]["a_correct"]["flags"]
    assert lab00["rows"]["w_wrong_topk"]["flags"].count("matches") == 2  # top-k differs from the solution


@pytest.mark.parametrize("student", ["t_patch_everything", "t_patch_late", "t_getframe"])
def test_tampering_turns_no_failing_test_into_a_passing_one(lab00, student):
    row = lab00["rows"][student]
    assert _score(lab00["rows"], student) <= _score(lab00["rows"], "w_wrong_topk"), row
    for test in ("test_top_k", "test_sampling_step"):
        assert test in row["reason"], row


def test_feedback_never_shows_hidden_tests(lab00):
    assert len(lab00["feedback"]) >= 15
    assert_nothing_leaked(lab00, lab00["solution"])
    for student in ("l_print_history", "l_thread_later", "l_caller_source"):
        assert student in lab00["feedback"]
    assert _score(lab00["rows"], "l_print_history") == 10
    assert _score(lab00["rows"], "l_thread_later") == 10
    assert "Output withheld" in lab00["feedback"]["l_print_history"]
    assert attacks.MARK_LATE not in lab00["feedback"]["l_thread_later"]


def test_student_code_sees_only_its_own_submission(lab00):
    page = html.unescape(lab00["feedback"]["s_read_disk"])
    assert attacks.MARK_ISOLATED in page, "the disk probe did not run before the hidden tests"
    assert attacks.MARK_LEAK not in page
    assert _score(lab00["rows"], "s_read_disk") == 10


def test_nothing_outside_the_sandbox_changes(lab00):
    for name, digest in lab00["hashes"].items():
        assert _sha(lab00["writable"][name]) == digest, f"the student changed {name}"
    assert attacks.MARK_WROTE not in lab00["feedback"]["s_write"]
    assert _score(lab00["rows"], "s_write") == 10


def test_no_network(lab00):
    assert attacks.MARK_NO_NET in lab00["feedback"]["s_network"]
    assert lab00["connections"] == 0


def test_fork_bombs_and_giant_allocations_are_contained(lab00):
    rows = lab00["rows"]
    assert _score(rows, "s_fork_bomb") <= 10
    assert _score(rows, "s_giant_alloc") == 10
    assert "memory limit" in rows["s_giant_alloc"]["reason"], rows["s_giant_alloc"]
    assert attacks.MARK_ALLOCATED not in lab00["feedback"]["s_giant_alloc"]


def test_sleeping_in_a_test_is_stopped(lab00):
    rows = lab00["rows"]
    assert _score(rows, "s_sleep_in_test") < 10 and "timed out" in rows["s_sleep_in_test"]["reason"]
    assert rows["s_sleep_in_test"]["status"] == "graded"
    # a kernel that ignores interrupts stays busy: every later cell times out, or the whole submission does
    stuck = rows["s_sleep_ignoring_interrupts"]
    assert _score(rows, "s_sleep_ignoring_interrupts") < 10 and ("timed out" in stuck["reason"]
                                                                 or "time limit" in stuck["reason"]), stuck


def test_no_process_outlives_grading(lab00):
    assert lab00["stray"] == []


LAB01 = "lab01_rope_gqa"


@pytest.fixture(scope="module")
def lab01(tmp_path_factory):
    if not sandbox_status()[0]:
        pytest.skip(f"no grading sandbox here: {sandbox_status()[1]}")
    tmp = tmp_path_factory.mktemp("integrity01")
    source = read(ROOT / "solutions" / LAB01 / f"{LAB01}.ipynb")
    solution = attacks.as_student(source)
    release = read(ROOT / "labs" / LAB01 / f"{LAB01}.ipynb")
    refs = lab_references(ROOT / "solutions" / LAB01)
    wrong_rope = attacks.replace_solution(solution, release, "impl_rope", """
        head_dim = x.shape[-1]
        if head_dim % 2:
            raise ValueError(f"head_dim must be even, got {head_dim}")
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = positions.to(torch.float32)[:, None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        return x * angles.cos().to(x.dtype) + torch.cat((x2, -x1), dim=-1) * angles.sin().to(x.dtype)  # wrong sign
    """)
    sensitive = {"solution": ROOT / "solutions" / LAB01 / f"{LAB01}.ipynb",
                 "other_student": tmp / "submitted" / "a_correct" / LAB01 / f"{LAB01}.ipynb",
                 "gradebook": tmp / "work" / "course" / "gradebook.db", "students": tmp / "work" / "students"}
    students = {
        "a_correct": solution,
        "b_empty": release,
        "w_wrong_rope": wrong_rope,
        "r_import": attacks.import_references(solution, refs),
        "r_read_source": attacks.read_reference_source(solution, refs),
        "t_patch_everything": attacks.add_cell(wrong_rope, attacks.patch_everything(), early=True),
        "l_print_history": attacks.add_cell(solution, attacks.LEAK_HISTORY, early=False),
        "s_read_disk": attacks.add_cell(solution, attacks.probe_disk(sensitive), early=True),
    }
    graded = grade_class(LAB01, students, tmp, jobs=2, cell_timeout=60)
    graded.update(solution=source, stray=_processes_of(tmp / "work"))
    return graded


def test_lab01_class(lab01):
    rows = lab01["rows"]
    full = float(rows["a_correct"]["max_score"])
    assert full == 12 and _score(rows, "a_correct") == full
    assert _score(rows, "b_empty") == 0
    wrong = _score(rows, "w_wrong_rope")
    assert wrong == 12 - 4 - 2, rows["w_wrong_rope"]  # test_rope and the layer test fail
    for student in ("r_import", "r_read_source"):
        assert _score(rows, student) == 0 and "blocked reference" in rows[student]["reason"], rows[student]
    assert _score(rows, "t_patch_everything") <= wrong
    assert "test_rope (" in rows["t_patch_everything"]["reason"], rows["t_patch_everything"]
    assert _score(rows, "l_print_history") == full and _score(rows, "s_read_disk") == full
    page = html.unescape(lab01["feedback"]["s_read_disk"])
    assert attacks.MARK_ISOLATED in page and attacks.MARK_LEAK not in page
    assert_nothing_leaked(lab01, lab01["solution"])
    assert lab01["stray"] == []
