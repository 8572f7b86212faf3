"""Hostile inputs are refused with a clear error, and their payload never runs.

Each payload writes a marker file when unpickled (``hostile.py``); a control test proves the payloads
are live. Refused: pickle members in shards (``.pyd``, ``.pth``), a checkpoint file carrying a pickle
payload (with a manifest that vouches for it, and with one that lies about its hash), backbone weights
and adapter exports carrying one, a YAML config with ``!!python/object``, and a shard manifest that lies
about sizes and hashes. A scan of the source (AST, not grep) finds no ``torch.load`` without
``weights_only=True``, no ``yaml.load``, no ``pickle.load`` and no tar extraction.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import REPO
from hostile import pickle_payload, poison, torch_payload
from runchecks import CONFIG, STEPS, ZERO2, tiny_overrides, train_records


def _avpea(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avpea_dist.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_payloads_are_live(tmp_path):
    """Control: unpickling the same bytes elsewhere does run the payload, so the marker checks can fail."""
    for name, data, loader in (
            ("p.pkl", pickle_payload, "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())"),
            ("p.pt", torch_payload, "import torch, sys; torch.load(sys.argv[1], weights_only=bool(0))")):
        marker = tmp_path / f"{name}.ran"
        (tmp_path / name).write_bytes(data(marker))
        subprocess.run([sys.executable, "-c", loader, str(tmp_path / name)], check=True, timeout=120,
                       capture_output=True)
        assert marker.read_text() == "payload ran"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_shard_pickle_members_and_a_lying_manifest_are_refused(synth_shards, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    shards = tmp_path / "shards"
    poison(synth_shards, shards, marker)
    manifest = json.loads((shards / "manifest.json").read_text())
    val, test = manifest["splits"]["val"]["shards"][0], manifest["splits"]["test"]["shards"][0]
    val["bytes"] += 4096  # the manifest lies about a size...
    test["sha256"] = "0" * 64  # ...and about a hash
    (shards / "manifest.json").write_text(json.dumps(manifest))

    out = _avpea("shards", "verify", str(shards))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.count(".pyd' refused") == 4 and out.stdout.count(".pth' refused") == 4, out.stdout
    assert f"{shards / val['file']}: {val['bytes'] - 4096} bytes, manifest says {val['bytes']}" in out.stdout
    assert f"{shards / test['file']}: sha256 differs from the manifest" in out.stdout

    from avpea_dist.data.loaders import make_train_loader
    from avpea_dist.tasks.avel.codec import AVELCodec

    loader = make_train_loader(shards, codec=AVELCodec(len(manifest["classes"])), batch_size=4, img_size=32,
                               num_workers=0, shuffle_buffer=8, seed=0, rank=0, world_size=1, epoch=0, epoch_batches=8)
    batches = list(loader)
    assert len(batches) == 8 and all(b["labels"].shape[0] == 4 for b in batches)
    assert sum(b["skipped"] for b in batches) > 0
    assert not marker.exists(), "a shard's pickle payload ran"


@pytest.mark.timeout(120)
def test_yaml_config_with_python_tags_is_refused(tmp_path):
    from avpea_dist.config import ConfigError
    from avpea_dist.config_load import load_config

    marker = tmp_path / "PAYLOAD_RAN"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"train:\n  out: !!python/object/apply:os.system ['touch {marker}']\n")
    out = _avpea("train", str(evil))
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"avpea train: error: config file '{evil}' is not valid YAML at line 2"), out.stderr
    assert "python tags such as !!python/object are refused" in out.stderr
    assert out.stderr.count("\n") == 1, "one line, as the CLI promises"
    assert "Traceback" not in out.stderr
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(CONFIG, [f"train.out=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_weight_files_carrying_pickles_are_refused(tmp_path):
    """Backbone weights (model.pretrained) and adapter exports are read without unpickling."""
    from avpea_dist.config import ModelConfig
    from avpea_dist.models.model import build_model
    from avpea_dist.tasks.avel.head import AVELHead
    from avpea_dist.train.export import load_trainable

    marker = tmp_path / "PAYLOAD_RAN"
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(torch_payload(marker))
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", pretrained=str(weights), img_size=32, bottleneck=24)

    def head(embed_dim, streams):
        return AVELHead(embed_dim * len(streams), 16, 9)

    with pytest.raises(ValueError, match="weights_only=True"):
        build_model(cfg, task=head)
    export = tmp_path / "adapters.safetensors"
    export.write_bytes(pickle_payload(marker))
    model = build_model(ModelConfig(**{**vars(cfg), "pretrained": "none"}), task=head)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_trainable(model, export, model.cfg)
    assert not marker.exists()


def _tamper(run: Path, name: str, data: bytes, vouch: bool) -> Path:
    """Replace ``name`` in the newest checkpoint; ``vouch`` rewrites the manifest's hash to match."""
    import hashlib

    folder = run / "checkpoints" / f"step_{STEPS:08d}"
    (folder / name).write_bytes(data)
    if vouch:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name,payload,resume,expect", [
    ("mp_rank_00_model_states.pt", torch_payload, "latest", "refused by the safe loader"),
    ("zero_pp_rank_1_mp_rank_00_optim_states.pt", torch_payload, "latest", "refused by the safe loader"),
    ("rank_1_rng.safetensors", pickle_payload, "latest", "rank_1_rng.safetensors"),
    ("mp_rank_00_model_states.pt", torch_payload, "folder", "does not match its sha256 in the manifest"),
], ids=["model-states-vouched", "zero2-rank1-optimizer-vouched", "rng-file-vouched", "manifest-lies-explicit-resume"])
def test_checkpoint_carrying_a_pickle_is_refused_on_every_rank(zygote, synth_shards, reference_for, tmp_path, name,
                                                               payload, resume, expect):
    marker = tmp_path / "PAYLOAD_RAN"
    run = tmp_path / "run"
    zero = ZERO2 if name.startswith("zero_pp") else ()  # only ZeRO-1/2 write per-rank optimizer files
    shutil.copytree(reference_for(*zero)[0], run)
    folder = _tamper(run, name, payload(marker), vouch=resume == "latest")
    extra = [f"train.resume={folder}"] if resume == "folder" else []
    job = zygote.run(tmp_path / "logs", CONFIG, tiny_overrides(synth_shards, run, *zero, *extra))
    assert not job.hung and [job.code(0), job.code(1)] == [2, 2], job.describe()
    errors = []
    # An explicit resume is judged by rank 0 alone: it states the reason once, the other rank stays silent.
    speakers = (0, 1) if resume == "latest" else (0,)
    for r in (0, 1):
        assert "Traceback" not in job.log(r), job.log(r)[-3000:]
        said = f"avpea train (rank {r}): error: " in job.log(r)
        assert said == (r in speakers), job.log(r)[-3000:]
        errors.append(job.log(r).split(f"avpea train (rank {r}): error: ", 1)[1] if said else "")
    reader = 1 if "rank_1" in name else 0  # the rank that read the bad file names it and the cause
    assert expect in errors[reader] and str(folder) in errors[reader], errors[reader]
    if resume == "latest":  # every rank names the checkpoint (an explicit resume is judged by rank 0 alone)
        assert str(folder) in errors[1 - reader], errors[1 - reader]
    assert not marker.exists(), "a checkpoint's pickle payload ran"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_checkpoint_whose_manifest_lies_is_passed_over(zygote, synth_shards, reference_for, tmp_path):
    """resume=latest skips a tampered checkpoint (naming why), resumes from the older complete one, and
    ends exactly like the uninterrupted run."""
    keep = "train.keep_checkpoints=2"  # an older complete checkpoint exists whatever the val curve does
    reference = reference_for(keep)
    marker = tmp_path / "PAYLOAD_RAN"
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    _tamper(run, "mp_rank_00_model_states.pt", torch_payload(marker), vouch=False)
    older = sorted(p.name for p in (run / "checkpoints").glob("step_*"))[:-1]
    assert older, "the reference run kept no older checkpoint to fall back to"
    job = zygote.run(tmp_path / "logs", CONFIG, tiny_overrides(synth_shards, run, keep))
    assert [job.code(0), job.code(1)] == [0, 0], job.describe()
    assert f"not resuming from step_{STEPS:08d}: 'mp_rank_00_model_states.pt' does not match its sha256" in job.log(0)
    assert [e["folder"] for e in job.events(0, "load")] == [str(run / "checkpoints" / older[-1])]
    assert train_records(run) == train_records(reference[0])
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Source scan


_PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
_YAML_UNSAFE = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _const_kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Every way of running pickled code or extracting a tar that the project forbids, as 'file:line what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module.split(".")[0]
            for alias in node.names:
                if (base in _PICKLE_MODULES and alias.name.startswith("load")) or \
                        (base == "yaml" and alias.name in _YAML_UNSAFE) or (base == "torch" and alias.name == "load"):
                    found.append(f"{where} from {node.module} import {alias.name}")
        if isinstance(node, ast.Attribute) and node.attr in ("Loader", "UnsafeLoader", "FullLoader") \
                and _dotted(node.value) == "yaml":
            found.append(f"{where} yaml.{node.attr}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        parts = name.split(".")
        if _const_kw(node, "weights_only") is False:
            found.append(f"{where} {name}(weights_only=False)")
        if parts[-1] == "load" and parts[0] == "torch" and _const_kw(node, "weights_only") is not True:
            found.append(f"{where} {name} without weights_only=True")
        if parts[0] == "yaml" and parts[-1] in _YAML_UNSAFE:
            found.append(f"{where} {name}")
        if parts[0] in _PICKLE_MODULES and parts[-1] in ("load", "loads", "Unpickler", "open"):
            found.append(f"{where} {name}")
        if parts[-1] in ("extractall", "extract", "unpack_archive") and len(parts) > 1:
            found.append(f"{where} {name} (archive extraction)")
        if parts[-1] == "load" and parts[0] in ("np", "numpy") and _const_kw(node, "allow_pickle") not in (None, False):
            found.append(f"{where} {name}(allow_pickle=...)")
    return found


def test_the_scanner_catches_every_forbidden_form():
    bad = ["torch.load(p)", "torch.load(p, weights_only=False)", "x = torch.serialization.load(f)",
           "yaml.load(s)", "yaml.load(s, Loader=yaml.Loader)", "yaml.unsafe_load(s)", "yaml.full_load(s)",
           "pickle.load(f)", "pickle.loads(b)", "dill.loads(b)", "cloudpickle.load(f)", "marshal.loads(b)",
           "tar.extractall(d)", "tarfile.open(p).extract(m)", "shutil.unpack_archive(p)",
           "np.load(f, allow_pickle=True)", "from pickle import loads", "from yaml import load",
           "from torch import load", "deepspeed_load(f, weights_only=False)"]
    for snippet in bad:
        assert unsafe_calls(snippet), f"the scanner misses {snippet!r}"
    good = ["torch.load(p, map_location='cpu', weights_only=True)", "yaml.safe_load(s)", "pickle.dumps(x)",
            "tar.extractfile(info).read()", "np.load(f, allow_pickle=False)", "torch.save(x, f)",
            "json.load(f)", "load_file(p)"]
    for snippet in good:
        assert not unsafe_calls(snippet), f"the scanner flags the safe {snippet!r}"


def test_no_source_file_unpickles_or_extracts():
    files = [p for p in REPO.rglob("*.py")
             if not any(part.startswith(".") or part in ("build", "dist", "runs", "node_modules", "venv")
                        for part in p.relative_to(REPO).parts)]
    assert any(p.match("avpea_dist/train/checkpoint.py") for p in files)
    found = [hit for p in files for hit in unsafe_calls(p.read_text(), str(p.relative_to(REPO)))]
    assert not found, "unsafe deserialisation or extraction:\n" + "\n".join(found)
