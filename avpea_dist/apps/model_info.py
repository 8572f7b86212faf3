"""`avpea model-info`: parameter counts of a configuration, built on the meta device (no memory)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-info", help="parameter counts of a configuration (built on the meta device)")
    p.add_argument("config", help="YAML config, e.g. configs/avel_vitl.yaml")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides such as model.bottleneck=64")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=model_info)


def model_info(args: argparse.Namespace) -> int:
    import torch

    from ..config_load import load_config
    from ..models.model import AVPEAModel, param_counts

    cfg = load_config(args.config, args.overrides)
    with torch.device("meta"):
        counts = param_counts(AVPEAModel(cfg.model))
    counts["config"] = str(args.config)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    print(f"config      {args.config}  (backbone {cfg.model.backbone}, modalities {cfg.model.modalities}, "
          f"adapters {'on' if cfg.model.adapters else 'off'})")
    for key in ("total_params", "backbone_params", "adapter_params", "head_params", "trainable_params"):
        print(f"{key:<17} {counts[key]:>13,}  ({counts[key] / 1e6:.2f}M)")
    print(f"trainable_share   {100 * counts['trainable_share']:>12.2f}%  of {counts['share_denominator']}")
    return 0
