"""One student's nbgrader steps in one process: ``autograde``, then ``generate_feedback``.

``python -m course_utils.tooling.grading.worker LAB STUDENT [--feedback]``, run in the student's own
course folder (whose ``nbgrader_config.py`` configures the sandboxed kernel and the judge). Running
both nbgrader applications in one process saves an interpreter start and nbgrader's imports per
student. Exit status 0 when autograding finished (whatever the score), 1 otherwise.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from nbgrader.apps import AutogradeApp, GenerateFeedbackApp

    lab, student = argv[0], argv[1]
    app = AutogradeApp()
    app.initialize([lab, "--student", student, "--force"])
    app.start()
    if "--feedback" in argv:
        feedback = GenerateFeedbackApp()
        feedback.initialize([lab, "--student", student, "--force"])
        feedback.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
