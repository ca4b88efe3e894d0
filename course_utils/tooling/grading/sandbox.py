"""The sandbox a student's kernel runs in while a lab is graded.

With bubblewrap (``bwrap``, Debian package ``bubblewrap``) the kernel runs in new mount, PID,
network, IPC and UTS namespaces where it sees only:

* the system's programs and libraries (``/usr``, ``/etc``) and the Python installation and its
  site-packages, read-only;
* the course package ``course_utils``, read-only, with the reference answers of the lab being
  graded replaced by stubs that raise (see :mod:`course_utils.tooling.grading.reference`);
* a private scratch copy of the student's own submission folder as its working directory, a small
  ``/tmp`` and home, and a private model cache whose converted models are bound read-only;
* no network (only its own loopback), no other process of the machine.

Not visible: the course folder (solutions, releases, tests, git history), the grader's work folder
(gradebook, source and autograded notebooks), other students' submissions, the grades and feedback.
Everything the kernel writes is deleted with its scratch folder. Resource limits (``setrlimit``)
cap its memory, its file sizes and, when the grader runs as root, the number of processes of the
unprivileged user it runs as (one uid per parallel grading slot, so one student's fork bomb cannot
starve another's kernel). The kernel talks to the grader over ZeroMQ ``ipc`` sockets in its runtime
folder, since it has no network.

Without bubblewrap (a laptop, Colab) grading still works: the kernel runs with the same resource
limits and the redacted ``course_utils`` first on its path, but it can read the disk; the grader
says so in its output and the CSV.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_utils.runtime import CACHE_ENV

SANDBOX_UID_BASE = 61000  # kernels run as uids from here on (when the grader is root), one per grading slot
SANDBOX_UID_COUNT = 1000
GiB = 1 << 30


@dataclass
class Limits:
    """Resource limits of one student's kernel (``setrlimit``; inherited by its children)."""

    memory_bytes: int = 6 * GiB  # RLIMIT_DATA per process: heap and anonymous mappings
    file_bytes: int = 1 * GiB  # RLIMIT_FSIZE: the largest file it may write
    nproc: int = 512  # RLIMIT_NPROC for its unprivileged user: processes and threads
    tmp_bytes: int = 1 * GiB  # size of its /tmp (and home), a tmpfs


@dataclass
class SandboxSpec:
    """Everything the kernel launcher needs; written as JSON beside the kernelspec."""

    workdir: str  # the folder the notebook runs in (nbgrader's autograded folder), as seen inside
    scratch: str  # what is mounted there: a private copy of the student's own files
    runtime_dir: str  # connection file and ipc sockets
    cache_dir: str  # the kernel's $LLM_COURSE_CACHE (writable scratch)
    model_dirs: dict[str, str] = field(default_factory=dict)  # name → complete converted model folder
    package_dir: str = ""  # the real course_utils folder
    package_copy: str = ""  # what the kernel sees there (redacted, or an untouched copy)
    env: dict[str, str] = field(default_factory=dict)
    uid: int | None = None  # when the grader is root: the unprivileged uid of the kernel
    limits: Limits = field(default_factory=Limits)
    sandboxed: bool = True

    def to_json(self) -> str:
        import json

        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SandboxSpec:
        import json

        data = json.loads(text)
        data["limits"] = Limits(**data["limits"])
        return cls(**data)


class UidPool:
    """Unprivileged uids for the kernels of one grading session, each held by a file lock for the
    whole session: two graders running at once (two labs, two teaching assistants) never share a
    uid, so one student's fork bomb cannot exhaust another session's process limit."""

    def __init__(self, count: int):
        import fcntl

        folder = Path(tempfile.gettempdir()) / "llm-course-sandbox-uids"
        folder.mkdir(exist_ok=True)
        self.uids: list[int] = []
        self._handles = []
        for uid in range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_COUNT):
            if len(self.uids) == count:
                break
            handle = open(folder / f"{uid}.lock", "w")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            if _tasks_of(uid):  # a process of an earlier session (or someone else) still runs as it
                handle.close()
                continue
            self.uids.append(uid)
            self._handles.append(handle)
        if len(self.uids) < count:
            self.release()
            raise RuntimeError(f"no {count} free sandbox uids in {SANDBOX_UID_BASE}..{SANDBOX_UID_BASE + SANDBOX_UID_COUNT}")

    def release(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles, self.uids = [], []


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _python_dirs() -> list[str]:
    """Folders the Python interpreter and its packages live in."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(os.path.realpath(sys.executable)).parent.parent)}
    for d in [*site.getsitepackages(), site.getusersitepackages()]:
        if os.path.isdir(d):
            dirs.add(d)
    return sorted(d for d in dirs if os.path.isdir(d))


def _system_args() -> list[str]:
    args: list[str] = []
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt"):
        path = Path("/") / top
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def bwrap_command(spec: SandboxSpec, inner: list[str]) -> list[str]:
    """The bwrap command line running ``inner`` inside the sandbox described by ``spec``."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise RuntimeError("bwrap is not installed (apt-get install bubblewrap)")
    lim = spec.limits
    # new namespaces for everything but users when root (it then drops to spec.uid itself); an
    # unprivileged grader needs a user namespace for bwrap to work at all
    args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]
    if spec.uid is None:
        args.insert(1, "--unshare-user")
    system = _system_args()
    args += system + ["--ro-bind-try", "/sys", "/sys", "--proc", "/proc", "--dev", "/dev",
                      "--perms", "01777", "--size", str(lim.tmp_bytes), "--tmpfs", "/tmp"]
    binds: list[str] = []
    for d in _python_dirs():
        binds += ["--ro-bind", d, d]
    # the course package: only this folder of the course is visible, read-only (redacted when grading)
    binds += ["--ro-bind", spec.package_copy, spec.package_dir]
    binds += ["--bind", spec.cache_dir, spec.cache_dir]
    for name, path in sorted(spec.model_dirs.items()):
        binds += ["--ro-bind", path, str(Path(spec.cache_dir) / "models" / name)]
    binds += ["--bind", spec.runtime_dir, spec.runtime_dir, "--bind", spec.scratch, spec.workdir]
    existing = [system[i + 2] for i in range(0, len(system), 3)] + ["/sys", "/proc", "/dev", "/tmp"]
    args += _parent_dirs(binds, existing) + binds + ["--chdir", spec.workdir]
    home = "/tmp/home"
    env = {**spec.env, "HOME": home, "TMPDIR": "/tmp", CACHE_ENV: spec.cache_dir}
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    if spec.uid is not None:  # root: drop to an unprivileged user inside (rlimits then apply to it)
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
        args += [shutil.which("setpriv") or "setpriv", f"--reuid={spec.uid}", f"--regid={spec.uid}",
                 "--clear-groups", "--no-new-privs", "--", "/bin/sh", "-c", f'mkdir -p {home} && exec "$@"', "sh"]
    else:
        args += ["--", "/bin/sh", "-c", f'mkdir -p {home} && exec "$@"', "sh"]
    return args + inner


def _parent_dirs(binds: list[str], existing: list[str]) -> list[str]:
    """``--dir`` arguments creating every missing parent of the bind targets as a 0755 folder: bwrap
    would create them 0700 (root's), and the unprivileged kernel could not walk down to its files.
    ``binds`` holds triples (``--ro-bind SRC DEST``); ``existing`` the mount points already made."""
    targets = [binds[i + 2] for i in range(0, len(binds), 3)]
    mounted = set(targets) | set(existing)
    parents = {str(p) for t in targets for p in Path(t).parents if str(p) != "/"} - mounted
    # a parent inside a read-only system mount (e.g. /usr/lib) already exists there
    parents = {p for p in parents if not any(p.startswith(m.rstrip("/") + "/") for m in existing if m != "/tmp")}
    return [x for p in sorted(parents, key=lambda p: (p.count("/"), p)) for x in ("--perms", "0755", "--dir", p)]


def _tasks_of(uid: int) -> int:
    """How many processes and threads ``uid`` runs now (what RLIMIT_NPROC counts)."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


def apply_limits(limits: Limits, *, nproc: bool) -> None:
    """Set this process's resource limits (inherited by what it executes). An unprivileged grader's
    kernel shares its user's process count, so its cap is what that user runs now plus ``nproc``."""
    def lower(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (cap, cap))

    lower(resource.RLIMIT_DATA, limits.memory_bytes)
    lower(resource.RLIMIT_FSIZE, limits.file_bytes)
    lower(resource.RLIMIT_CORE, 0)
    if nproc:
        base = 0 if os.geteuid() == 0 else _tasks_of(os.getuid())
        lower(resource.RLIMIT_NPROC, base + limits.nproc)


@functools.lru_cache(maxsize=1)
def sandbox_status() -> tuple[bool, str]:
    """Whether kernels can be sandboxed here, and how (or why not). Runs a probe once: a process in
    the sandbox must fail to read a file outside it and to reach the network."""
    if sys.platform != "linux":
        return False, f"no sandbox on {sys.platform}: bubblewrap needs Linux"
    if bwrap_path() is None:
        return False, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="llm-course-probe-") as tmp:
        tmp_path = Path(tmp)
        secret = tmp_path / "outside" / "secret.txt"
        secret.parent.mkdir()
        secret.write_text("outside")
        for sub in ("scratch", "runtime", "cache", "pkg"):
            (tmp_path / sub).mkdir()
        pool = UidPool(1) if os.geteuid() == 0 else None
        uid = pool.uids[0] if pool else None
        if uid is not None:
            for sub in ("scratch", "runtime", "cache"):
                os.chown(tmp_path / sub, uid, uid)
            os.chmod(tmp, 0o755)
        spec = SandboxSpec(workdir=str(tmp_path / "work"), scratch=str(tmp_path / "scratch"),
                           runtime_dir=str(tmp_path / "runtime"), cache_dir=str(tmp_path / "cache"),
                           package_dir=str(tmp_path / "pkg-seen"), package_copy=str(tmp_path / "pkg"), uid=uid)
        probe = ("import os, socket, sys\n"
                 f"try:\n    open({str(secret)!r}).read(); sys.exit('can read outside')\nexcept OSError: pass\n"
                 "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); sys.exit('has network')\n"
                 "except OSError: pass\n"
                 "open('written', 'w').write('x')\nprint('uid', os.getuid())\n")
        try:
            cmd = bwrap_command(spec, [sys.executable, "-c", probe])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired, RuntimeError) as err:
            return False, f"bubblewrap does not run here ({type(err).__name__}: {err})"
        finally:
            if pool:
                pool.release()
        if proc.returncode != 0 or not (tmp_path / "scratch" / "written").exists():
            why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return False, f"bubblewrap does not run here: {why[0]}"
    who = "each kernel as its own unprivileged uid" if uid is not None else "as the grading user, in a user namespace"
    return True, f"bubblewrap {bwrap_path()}: no network, no disk but the submission, {who}"
