"""`avpea model-info`: parameter counts of a configuration with its own task's head, built on the meta device.

The head is the one the config's task builds (``Task.build_head``), so an AVQA config counts the AVST head
and a retrieval config its text encoder and projections. Heads sized by the shards (classes, vocabulary,
tokenizer) read the manifest at ``data.shards``; without shards there, the task's ``example_manifest``
stands in and the output says so (the counts then hold for that example vocabulary).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-info", help="parameter counts of a configuration and its task head (meta device)")
    p.add_argument("config", help="YAML config, e.g. configs/avel_vitl.yaml")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides such as model.bottleneck=64")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=model_info)


def count_params(cfg: Any) -> dict[str, Any]:
    """Parameter counts of ``cfg``'s model: the encoder and the head of ``cfg.task``. Adds ``task`` and
    ``head_sized_by`` ('shards at DIR' or 'the task's example manifest (no shards at DIR)')."""
    import torch

    from ..data.manifest import MANIFEST, read_description
    from ..models.model import build_model, param_counts
    from ..tasks.registry import build_task, get_task

    shards = Path(cfg.data.shards)
    with tempfile.TemporaryDirectory(prefix="avpea-model-info-") as folder:
        if (shards / MANIFEST).is_file():
            manifest, source = read_description(shards), f"shards at {shards}"
        else:
            # May write a small text model under ``folder`` (retrieval, captioning): read before it goes.
            before = cfg.to_dict()
            manifest = get_task(cfg.task).example_manifest(cfg, Path(folder))
            source = f"the task's example manifest (no shards at {shards})"
            swapped = _changed(before, cfg.to_dict()).replace(str(Path(folder)), "<example>")
            if swapped:  # e.g. a hub text model not in the local cache, replaced by the example's small one
                source += f"; not available offline, so replaced: {swapped}"
        task = build_task(cfg, manifest)

        def head_on_cpu(embed_dim: int, streams: tuple[str, ...]) -> Any:
            # Heads may load weights (a text encoder: from_pretrained refuses the meta device); they are
            # small next to the backbone, which is the part that would not fit in memory.
            with torch.device("cpu"):
                return task.build_head(embed_dim, streams)

        with torch.device("meta"):
            counts = param_counts(build_model(cfg.model, load_weights=False, task=head_on_cpu))
    return {"task": cfg.task, **counts, "head_sized_by": source}


def _changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    return ", ".join(f"{section}.{k}={v!r}" for section, keys in after.items() if isinstance(keys, dict)
                     for k, v in keys.items() if before.get(section, {}).get(k) != v)


def model_info(args: argparse.Namespace) -> int:
    from ..config_load import load_config

    cfg = load_config(args.config, args.overrides)
    counts = count_params(cfg)
    counts["config"] = str(args.config)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    print(f"config      {args.config}  (task {cfg.task}, backbone {cfg.model.backbone}, modalities "
          f"{cfg.model.modalities}, adapters {'on' if cfg.model.adapters else 'off'})")
    print(f"head        {counts['head']}  (sized by {counts['head_sized_by']})")
    for key in ("total_params", "backbone_params", "adapter_params", "head_params", "trainable_params"):
        print(f"{key:<17} {counts[key]:>13,}  ({counts[key] / 1e6:.2f}M)")
    print(f"trainable_share   {100 * counts['trainable_share']:>12.2f}%  of {counts['share_denominator']}")
    return 0
