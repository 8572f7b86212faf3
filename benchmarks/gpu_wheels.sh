#!/usr/bin/env bash
# Run HERE (a machine with PyPI access), before benchmarks/gpu_check.sh: puts into .whl/ (git-ignored) the
# packages the GPU image lacks (its own torch 2.11, timm and numpy are used). The set is the one that ran
# DeepSpeed ZeRO-2 on an H200: a pure-Python deepspeed wheel built from its sdist, and cp312 manylinux
# wheels of the rest; about 5 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip wheel -q --no-deps -w .whl deepspeed==0.19.8
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for pkg in hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.7.0 typing-inspection==0.4.2 \
           "typing-extensions==4.16.0" webdataset==1.0.2 braceexpand==0.1.7 py-cpuinfo==9.0.0 msgpack==1.2.4; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d .whl "$pkg"
done
ls -la .whl
