"""The launch path from a laptop to a cluster: one training script, three launchers, two configs.

``scripts/train_distributed.py`` is the training script. The same file runs

* from the notebook and the tests, through :func:`torchrun` (``python -m torch.distributed.run
  --standalone --nproc_per_node 2``: two gloo ranks on one CPU);
* on several nodes with ``scripts/launch/torchrun_multinode.sh`` (``--nnodes``, a rendezvous
  endpoint, NCCL on GPUs);
* under Slurm with ``sbatch scripts/launch/train.sbatch`` (``srun`` starts one torchrun per node).

Only the world size and the backend change; the code path is the one tested here with two ranks.
The DeepSpeed ZeRO-3 and accelerate FSDP2 configs in ``scripts/launch/`` are checked with the
libraries' own parsers (:func:`validate_deepspeed_config`, :func:`validate_accelerate_config`).

:func:`torchrun` starts the launcher in its own process group and, whatever happens (error,
timeout, interrupt), ends that whole group before returning: no worker outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from course_utils import checks
from course_utils.runtime import repo_root

SCRIPT = Path("scripts") / "train_distributed.py"
LAUNCH_DIR = Path("scripts") / "launch"


def launch_file(name: str) -> Path:
    """Path of a file the course ships for launching: ``"train_distributed.py"`` or one in
    ``scripts/launch/`` (``ds_zero3.json``, ``ds_zero2.json``, ``accelerate_fsdp2.yaml``,
    ``torchrun_multinode.sh``, ``train.sbatch``)."""
    root = repo_root()
    path = root / SCRIPT if name == SCRIPT.name else root / LAUNCH_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{name!r}: no such launch file at {path}")
    return path


def _end_group(proc: subprocess.Popen) -> None:
    """Terminate the launcher's whole process group (SIGTERM, then SIGKILL after 10 s)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            break
    with contextlib.suppress(ProcessLookupError):  # workers that outlived the launcher
        os.killpg(proc.pid, signal.SIGKILL)


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 900, echo: bool = True,
             script: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the training script under ``torchrun`` with ``nproc`` ranks on this machine and return
    the JSON report rank 0 wrote (the script's ``--out``).

    Rank 0's output is echoed line by line when ``echo``. Raises ``RuntimeError`` with the output's
    tail when the run fails, ``TimeoutError`` after ``timeout`` seconds; either way the launcher's
    process group is ended first.
    """
    checks.positive_int(nproc=nproc)
    checks.positive_number(timeout=timeout)
    if isinstance(args, str):
        raise TypeError("args must be a list of command-line arguments, not one string")
    script = Path(script) if script is not None else launch_file(SCRIPT.name)
    with tempfile.TemporaryDirectory(prefix="llm-course-torchrun-") as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "--tee=0", str(script), *args, "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)  # its own process group, ended as one
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _end_group(proc)

        timer = threading.Timer(timeout, on_timeout)
        timer.start()
        lines: list[str] = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if echo and not line.startswith("[rank1]") and "USDT" not in line:
                    print(line, end="", flush=True)
            proc.wait()
        finally:
            timer.cancel()
            _end_group(proc)
            proc.stdout.close()
        tail = "".join(lines if len(lines) <= 80 else [*lines[:40], "...\n", *lines[-40:]])
        if timed_out.is_set():
            raise TimeoutError(f"torchrun did not finish within {timeout} s:\n{tail}")
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"torchrun exited with {proc.returncode} without a report:\n{tail}")
        return json.loads(out.read_text())


def validate_deepspeed_config(path: str | os.PathLike, *, micro_batch: int = 8, grad_accum: int = 1,
                              hidden_size: int = 4096, bf16: bool = True) -> dict[str, Any]:
    """Parse a DeepSpeed config the way the Hugging Face Trainer does: fill its ``"auto"`` values
    from training arguments (``HfTrainerDeepSpeedConfig``), then check it with DeepSpeed's own
    ``DeepSpeedConfig`` (pydantic models that reject unknown keys and inconsistent batch sizes).
    Returns the resolved config. Needs ``deepspeed`` (imports on a CPU; nothing is compiled)."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import LlamaConfig, TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    raw = json.loads(Path(path).read_text())
    hf = HfTrainerDeepSpeedConfig(raw)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=micro_batch,
                                  gradient_accumulation_steps=grad_accum, bf16=bf16, use_cpu=True, report_to="none")
        hf.trainer_config_process(targs)

        class _Model:  # trainer_config_finalize reads only config.hidden_size for the bucket sizes
            config = LlamaConfig(hidden_size=hidden_size)

        hf.trainer_config_finalize(targs, _Model(), num_training_steps=1000)
    parsed = DeepSpeedConfig(hf.config)
    return {"config": hf.config, "zero_stage": parsed.zero_optimization_stage,
            "train_batch_size": parsed.train_batch_size, "bf16": parsed.bfloat16_config.enabled}


def validate_accelerate_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an accelerate config as ``accelerate launch --config_file`` does (its own argument
    parser and launch-environment builder), then build the ``FullyShardedDataParallelPlugin`` a
    training process would build from that environment. Returns the plugin's main settings."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    saved = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        plugin = FullyShardedDataParallelPlugin()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"fsdp_version": plugin.fsdp_version, "reshard_after_forward": plugin.reshard_after_forward,
            "state_dict_type": str(plugin.state_dict_type), "wrap": plugin.transformer_cls_names_to_wrap,
            "mixed_precision": env.get("ACCELERATE_MIXED_PRECISION"), "num_processes": args.num_processes}
