"""Release and autograde the course's labs with nbgrader: a grade that reflects the student's own
work, hidden tests that stay hidden, and student code that sees nothing but its own submission.

* :mod:`.course` — private nbgrader course folders, ``llm-course release``;
* :mod:`.sandbox` and :mod:`.kernel` — the bubblewrap sandbox each student's kernel runs in;
* :mod:`.reference` — the lab's reference answers: blocked while grading, and run for expected values;
* :mod:`.judge` — hidden-test observations judged in the grader's process;
* :mod:`.feedback` — feedback HTML without hidden tests;
* :mod:`.plagiarism` — flags for solution code that matches the reference with names erased;
* :mod:`.autograde` — grading a class, ``jobs`` students at a time (``llm-course grade``).
"""

from course_utils.tooling.grading.autograde import (
    CSV_COLUMNS,
    GradeRow,
    grade_reference_solution,
    grade_submissions,
    write_csv,
)
from course_utils.tooling.grading.course import failed_grade_cells, lab_notebooks, release
from course_utils.tooling.grading.sandbox import Limits, sandbox_status

__all__ = ["CSV_COLUMNS", "GradeRow", "Limits", "failed_grade_cells", "grade_reference_solution", "grade_submissions",
           "lab_notebooks", "release", "sandbox_status", "write_csv"]
