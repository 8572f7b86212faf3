"""Several `avpea` commands in one fresh process: the real CLI entry point (``avpea_dist.cli.main``) once per
command, in order, in a process with the given environment. A fresh process keeps what the command needs from
the environment (the s3 endpoint reaches its data workers through the forkserver the process starts); one
process for several commands pays the torch/DeepSpeed import (~10 s on 2 cores) once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_DRIVER = r"""
import contextlib, io, json, sys
from avpea_dist import cli
outs = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    if code:
        sys.stdout.write(out.getvalue())
        sys.exit(code)
    outs.append(out.getvalue())
print(json.dumps(outs))
"""


def avpea_commands(argvs: list[list[str]], env: dict[str, str], cwd: str | Path, timeout: float = 600) -> list[str]:
    """-> each command's stdout; fails the test (with the output) when a command returns non-zero."""
    done = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
