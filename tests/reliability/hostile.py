"""Hostile and broken artefacts: pickle payloads (plain and inside a torch file) and poisoned shards.

A payload, when unpickled, writes a marker file; the tests check that the marker never appears (and, as
a control, that unpickling the same bytes in a throwaway process does write it, so the check can fail).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any


class _Payload:
    """Unpickling this runs code: it writes the marker file. Nothing in the system may ever unpickle it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def pickle_payload(marker: Path) -> bytes:
    import pickle

    return pickle.dumps(_Payload(marker))


def torch_payload(marker: Path) -> bytes:
    """A torch.save file whose state dict carries the payload, as a hostile checkpoint would."""
    import torch

    buf = io.BytesIO()
    torch.save({"module": {"w": torch.zeros(2)}, "payload": _Payload(marker)}, buf)
    return buf.getvalue()


def _samples(path: Path) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """The shard's samples as (key, [(member suffix, bytes)]), read as a stream (nothing extracted)."""
    out: list[tuple[str, list[tuple[str, bytes]]]] = []
    with tarfile.open(path, mode="r|") as tar:
        for info in tar:
            key, _, suffix = info.name.partition(".")
            if not out or out[-1][0] != key:
                out.append((key, []))
            out[-1][1].append((suffix, tar.extractfile(info).read()))
    return out


def _write(path: Path, samples: list[tuple[str, list[tuple[str, bytes]]]]) -> None:
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for suffix, data in members:
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def poison(clean: Path, out: Path, marker: Path) -> set[str]:
    """Copy ``clean`` to ``out`` with every training shard poisoned; returns the keys made bad."""
    shutil.copytree(clean, out)
    manifest = json.loads((clean / "manifest.json").read_text())
    bad: set[str] = set()
    shards = manifest["splits"]["train"]["shards"]
    for n, sh in enumerate(shards):
        path = out / sh["file"]
        samples = _samples(path)
        (k1, m1), (k2, m2) = samples[0], samples[1]
        samples[0] = (k1, [(s, b"\xff\xd8 not a jpeg" if s == "f3.jpg" else d) for s, d in m1])
        samples[1] = (k2, m2 + [("json", dict(m2)["json"])])
        bad |= {k1, k2}
        for i, (suffix, payload) in ((2, ("pyd", pickle_payload(marker))), (3, ("pth", torch_payload(marker)))):
            if len(samples) > i:
                samples[i] = (samples[i][0], samples[i][1] + [(suffix, payload)])
                bad.add(samples[i][0])
        _write(path, samples)
        if n == len(shards) - 1:  # cut the last shard in the middle of its last member
            with tarfile.open(path, mode="r|") as tar:
                last = list(tar)[-1]
            path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])
            bad.add(samples[-1][0])
    return bad
