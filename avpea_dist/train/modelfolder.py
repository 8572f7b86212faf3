"""A run as a model folder (Hugging Face layout, ``models/pretrained.py``): ``export_run`` (`avpea export`,
and ``RUN/model/`` at the end of every finished run), its model card, and ``evaluate_model_folder``
(`avpea eval --model`). Reads only the run folder: its shards may be gone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .export import SIGNATURE, load_trainable

log = logging.getLogger(__name__)


MODEL_DIR = "model"
"""``RUN/model/``: the export every finished run writes of its best model (``export_run``)."""


def adapter_file(run_dir: Path, which: str = "best") -> Path:
    """RUN/<which>/adapters.safetensors; 'best' falls back to 'final' for a run that never validated."""
    if which not in ("best", "final"):
        raise ValueError(f"which={which!r}: choose 'best' or 'final'")
    for name in (which, "final") if which == "best" else (which,):
        if (run_dir / name / "adapters.safetensors").is_file():
            return run_dir / name / "adapters.safetensors"
    raise FileNotFoundError(f"'{run_dir}' holds no exported model ({which}/adapters.safetensors): the run has not "
                            f"validated yet; train it further")


def export_run(run_dir: str | Path, out: str | Path | None = None, *, which: str = "best",
               with_backbone: bool = False) -> Path:
    """A run folder -> a model folder at ``out`` (default ``RUN/model``): config.json, model.safetensors (the
    ``which`` export's trainable tensors; every tensor with ``with_backbone``), the text folders of a text
    task, train_config.yaml and README.md (the model card). Reads only the run folder: its shards may be gone."""
    import hashlib

    from safetensors import safe_open

    from ..config_load import load_config
    from ..models.pretrained import preprocessing_record, slim_manifest, write_folder
    from ..runtime.software import software_record
    from .runfolder import RUN_MANIFEST, read_run_manifest

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run folder (no config.yaml); pass the train.out of a run")
    out = Path(out) if out is not None else run_dir / MODEL_DIR
    source = adapter_file(run_dir, which)
    cfg = load_config(run_dir / "config.yaml")
    manifest, manifest_source = read_run_manifest(run_dir, cfg.data.shards)
    with safe_open(str(source), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    signature = json.loads(header.get(SIGNATURE, "{}"))
    if with_backbone:
        tensors = _full_state(cfg, manifest, source, signature)
    folders, relocated, notes = _text_folders(cfg, manifest)
    result = _read_json(run_dir / "result.json")
    copy = run_dir / RUN_MANIFEST
    config = {
        "format": "avpea-model-v1", "library": "avpea-dist", "task": cfg.task,
        "backbone": {"name": cfg.model.backbone, "weights": cfg.model.pretrained, "included": with_backbone},
        "model": vars(cfg.model), "preprocessing": preprocessing_record(cfg.model, manifest),
        "labels": (manifest or {}).get("classes"), "signature": signature, "relocated": relocated,
        "manifest": slim_manifest(manifest),
        "manifest_sha256": hashlib.sha256(copy.read_bytes()).hexdigest() if copy.is_file() else None,
        "manifest_source": manifest_source,
        "trained": {"which": source.parent.name, "step": json.loads(header.get("step", "null")),
                    "seed": cfg.train.seed, "selection_metric": (result or {}).get("selection_metric"),
                    "best_val_score": (result or {}).get("best_val_score"),
                    "test_score": (result or {}).get("test_score"), "status": (result or {}).get("status")},
        "run_config": cfg.to_dict(), "software": {"training": (result or {}).get("software"),
                                                  "export": software_record()},
        "notes": notes,
    }
    card = model_card(config, result, run_dir)
    return write_folder(out, config, tensors, card, folders, {"train_config.yaml": (run_dir / "config.yaml").read_text()})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _full_state(cfg: Any, manifest: dict[str, Any] | None, source: Path,
                signature: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of the trained model (the frozen backbone as training loaded it, the adapters and head)."""
    from ..models.model import build_model
    from ..tasks.registry import build_task

    task = build_task(cfg, manifest)
    torch.manual_seed(cfg.train.seed)  # a random-init frozen backbone is rebuilt exactly as training built it
    model = build_model(cfg.model, task=task)
    load_trainable(model, source, cfg.model, task.signature())
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _text_folders(cfg: Any, manifest: dict[str, Any] | None) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """The folders a text task reads besides the weights: the shards' text folder (-> ``text/``) and each
    model folder a task setting names (``LOCAL_PATHS``, -> ``text_models/<task>.<key>``; a hub name is
    copied from the local Hugging Face cache when there). -> (folders to copy, relocated settings, notes)."""
    from ..models.pretrained import TEXT_DIR, TEXT_MODELS_DIR

    folders: dict[str, Path] = {}
    relocated: dict[str, str] = {}
    notes: list[str] = []
    text = (manifest or {}).get("text") or {}
    if text.get("folder"):
        from ..datasets.valor.textmodel import shards_text_folder

        path = shards_text_folder(cfg.data.shards, manifest)
        if path.is_dir():
            folders[TEXT_DIR] = path
        else:
            notes.append(f"the shards' text folder {path} was not found; the export holds none")
    section = cfg.task_section
    for name, keywords in getattr(type(section), "LOCAL_PATHS", {}).items():
        value = str(getattr(section, name))
        if value in keywords:
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            path = _cached_snapshot(value)
        if path is None:
            notes.append(f"{cfg.task}.{name}={value!r} is not in the local Hugging Face cache: the export names it, "
                         f"and loading reads it from the cache of the machine that loads")
            continue
        rel = f"{TEXT_MODELS_DIR}/{cfg.task}.{name}"
        folders[rel], relocated[f"{cfg.task}.{name}"] = path, rel
    return folders, relocated, notes


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001  (not cached, not a repo id: the export names it instead)
        return None


def model_card(config: dict[str, Any], result: dict[str, Any] | None, run_dir: Path) -> str:
    """README.md of an export: what it does, on which data, how well, how it was made, how to load it."""
    from ..runtime.software import software_lines

    task, trained, backbone = config["task"], config["trained"], config["backbone"]
    tags = ["avpea", "audio-visual", "adapters", task]
    lines = ["---", "library_name: avpea-dist", "tags:", *[f"- {t}" for t in tags], "---", "",
             f"# AV-PEA {task} model", "",
             f"AV-PEA adapters and the head of task `{task}` on the frozen timm ViT `{backbone['name']}` (backbone weights: "
             f"`{backbone['weights']}`, " + ("included in this folder)." if backbone["included"] else
                                            "not included: loading fetches them from that source)."), ""]
    if backbone["weights"] == "none" and not backbone["included"]:
        lines += ["**The frozen backbone was randomly initialised** (model.pretrained=none): loading rebuilds it "
                  f"from seed {trained['seed']} with the same torch version; export with --with-backbone to "
                  "carry it.", ""]
    lines += ["## Data", ""]
    m = config.get("manifest") or {}
    splits = ", ".join(f"{k} {v.get('samples', v.get('clips', '?'))}" for k, v in (m.get("splits") or {}).items())
    lines += [f"- shard schema: {m.get('schema', 'avel')}; built from: {m.get('dataset', m.get('source', 'unknown'))}",
              f"- splits (samples): {splits or 'unknown'}",
              f"- manifest sha256: {config.get('manifest_sha256') or 'unknown (no copy in the run folder)'}",
              f"- preprocessing: " + ", ".join(f"{k}={config['preprocessing'][k]}" for k in
                                               ("frame_size", "img_size", "sample_rate", "mel_bins", "audio_frames",
                                                "num_segments") if k in config["preprocessing"]), ""]
    if config.get("labels"):
        lines += [f"- labels ({len(config['labels'])}): " + ", ".join(map(str, config["labels"][:30])), ""]
    lines += ["## Results", ""]
    if result:
        sel = result.get("selection_metric")
        lines += [f"- status: {result.get('status')}, step {result.get('step')} of {result.get('steps')}, "
                  f"best step {result.get('best_step')}",
                  f"- selection metric ({sel}, on val): {result.get('best_val_score')}",
                  f"- {result.get('final_split')} {sel}: {result.get('test_score')}"]
        scalars = {k: v for k, v in (result.get("test_metrics") or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != sel}
        lines += [f"- {result.get('final_split')} {k}: {v}" for k, v in sorted(scalars.items())]
    else:
        lines += ["- no result.json in the run folder (the run had not finished)"]
    lines += ["", "## How it was made", "",
              f"- exported from: {trained['which']}/adapters.safetensors (step {trained['step']}) of the run "
              f"{run_dir}",
              f"- seed: {trained['seed']}",
              f"- trained with: `{(result or {}).get('command') or 'avpea train train_config.yaml'}` "
              f"(its config: train_config.yaml; retrain with `avpea train train_config.yaml data.shards=SHARDS`)",
              "", "Software of the training run:", ""]
    lines += software_lines(config["software"]["training"]) if config["software"].get("training") else \
        ["- not recorded (a run from before software records)"]
    lines += ["", "Software of the export:", "", *software_lines(config["software"]["export"])]
    for note in config.get("notes") or []:
        lines += ["", f"Note: {note}"]
    lines += ["", "## Use", "", "```python", "from avpea_dist.models.model import AVPEAModel", "",
              "model = AVPEAModel.from_pretrained(\"THIS_FOLDER_OR_HUB_ID\")  # eval mode; model.exported.task",
              "```", "", "```bash"]
    from ..plugins import task_spec

    lines += [f"avpea {module.rsplit('.', 1)[-1]} --model DIR ..." for module in task_spec(task).commands]
    lines += ["avpea eval --model DIR --shards SHARDS --split test", "```", ""]
    return "\n".join(lines)


def export_model(run_dir: Path) -> Path | None:
    """``RUN/model/`` at the end of a finished run (rank 0): the best model as a model folder. A failure
    costs a warning, never the run (result.json is already written; `avpea export` can redo it)."""
    try:
        return export_run(run_dir)
    except Exception as e:  # noqa: BLE001  (the trained model is safe in best/; the export is a convenience)
        log.warning("could not write %s (%s: %s); run `avpea export --run %s --out DIR`", run_dir / MODEL_DIR,
                    type(e).__name__, e, run_dir)
        return None


def evaluate_model_folder(model: str | Path, shards: str | Path, split: str,
                          overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """``avpea eval --model DIR --shards SHARDS``: an exported model on a split of ``shards`` (any ranks of
    the environment). The shards' preprocessing must be the model's (one error naming both otherwise); the
    task is rebuilt from the shards' manifest, so a model trained on other classes is refused by its checks."""
    from ..data.manifest import read_description
    from ..models.model import AVPEAModel
    from ..models.pretrained import TEXT_DIR, check_compatible, read_config, resolve_folder
    from ..runtime import world as avdist
    from ..tasks.registry import build_task
    from .data_source import ShardData
    from .evaluate import evaluate_task

    folder = resolve_folder(str(model))
    saved = read_config(folder)
    manifest = read_description(shards)
    check_compatible(saved, str(model), preprocessing=manifest.get("preprocessing") or {},
                     other=f"the shards {shards}")
    if manifest.get("text") and (folder / TEXT_DIR).is_dir():  # the model's own tokenizer, the shards' captions
        manifest["text"] = {**manifest["text"], "folder": str((folder / TEXT_DIR).resolve())}
    info = avdist.world_info_from_env()
    device = torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    net = AVPEAModel.from_pretrained(str(folder), device=str(device), overrides=list(overrides))
    cfg = net.exported.run_config
    cfg.data.shards = str(shards)
    if info.world_size > 1:
        avdist.init_process_group(info, cfg.dist.backend, cfg.dist.timeout_s)
    ok = False
    try:
        data = ShardData(cfg, info.rank, info.world_size, task=build_task(cfg, manifest), splits=(split,))
        if data.task.signature() != net.exported.task.signature():
            raise ValueError(f"the shards {shards} give task settings {data.task.signature()}, the model in {model} "
                             f"was trained with {net.exported.task.signature()}; evaluate it on shards of its kind")
        result = evaluate_task(data.task, net, data.eval_batches(split), device, split=split)
        ok = True
    finally:
        avdist.teardown(barrier=ok)
    result.update(task=cfg.task, selection_metric=data.task.selection_metric, split=split, checkpoint=str(model),
                  trained_step=(saved.get("trained") or {}).get("step"))
    return result
