"""Start one student's IPython kernel in its sandbox (the argv of the grading kernelspec).

``python -m course_utils.tooling.grading.kernel SPEC.json -f CONNECTION_FILE [kernel args...]``
applies the resource limits, then replaces itself with bubblewrap running ``ipykernel_launcher``
(or, where no sandbox is available, with the kernel itself in the student's scratch folder). The
kernel's connection file is handed to the unprivileged user the kernel runs as; the kernel talks
over ``ipc`` sockets beside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from course_utils.runtime import CACHE_ENV
from course_utils.tooling.grading.sandbox import SandboxSpec, apply_limits, bwrap_command

KERNEL_NAME = "llm-course-graded"


def kernelspec(spec_path: Path) -> dict:
    """The kernel.json of the grading kernel (message-based interrupts: a signal to bwrap would not
    reach the kernel inside it)."""
    return {"argv": [sys.executable, "-m", "course_utils.tooling.grading.kernel", str(spec_path),
                     "-f", "{connection_file}"],
            "display_name": "Python 3 (graded, sandboxed)", "language": "python",
            "interrupt_mode": "message", "metadata": {"debugger": False}}


def main(argv: list[str]) -> None:
    spec = SandboxSpec.from_json(Path(argv[0]).read_text())
    kernel_args = argv[1:]
    inner = [sys.executable, "-m", "ipykernel_launcher", *kernel_args]
    root = os.geteuid() == 0
    if "-f" in kernel_args and spec.uid is not None:
        connection = kernel_args[kernel_args.index("-f") + 1]
        os.chown(connection, spec.uid, spec.uid)
    if spec.sandboxed:
        apply_limits(spec.limits, nproc=not root or spec.uid is not None)
        cmd = bwrap_command(spec, inner)
        os.execv(cmd[0], cmd)
    # no sandbox: same limits, the redacted course package first on the path, the scratch copy as cwd
    apply_limits(spec.limits, nproc=not root)
    env = {**spec.env, CACHE_ENV: spec.cache_dir,
           "PYTHONPATH": str(Path(spec.package_copy).parent), "HOME": os.environ.get("HOME", spec.scratch)}
    os.chdir(spec.scratch)
    os.execve(sys.executable, inner, env)


if __name__ == "__main__":
    main(sys.argv[1:])
