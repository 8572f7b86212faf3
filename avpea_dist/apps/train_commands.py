"""`avpea train`, `avpea eval`, `avpea export`, `avpea demo`: thin argument parsing; the work lives in
train/run, train/evaluate, train/export and apps/demo."""

from __future__ import annotations

import argparse
import json
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (one rank; start it under torchrun/srun/submitit for more)",
                       description="Train AV-PEA adapters. Run it once per rank: rank, world size and master "
                                   "address come from torchrun's or Slurm's environment. A rerun resumes from the "
                                   "newest complete checkpoint in train.out. Exit 0: finished; 3: preempted.")
    p.add_argument("config", help="YAML config (configs/avel_tiny.yaml) or a shipped config's name (avel_tiny)")
    p.add_argument("overrides", nargs="*", default=[], help="optional dotted overrides such as train.steps=100")
    p.set_defaults(func=train)

    p = sub.add_parser("eval", help="evaluate an exported model on a split",
                       description="Evaluate RUN/best/adapters.safetensors (or any export) with the frozen "
                                   "backbone of CONFIG, or a model folder (--model DIR, from `avpea export`) on "
                                   "--shards. Runs as one process or under torchrun.")
    p.add_argument("config", nargs="?", help="the YAML config the adapters were trained with (RUN/config.yaml); "
                   "not with --model")
    p.add_argument("overrides", nargs="*", default=[], help="optional dotted overrides such as data.shards=shards/ave")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="adapter+head export (.safetensors), with CONFIG")
    which.add_argument("--model", help="a model folder (`avpea export`, RUN/model) or a hub id, with --shards")
    p.add_argument("--shards", help="the shards to evaluate --model on (their preprocessing must be the model's)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(func=evaluate_cmd)

    p = sub.add_parser("export", help="a run's model as a folder to share: config.json, model.safetensors, card",
                       description="Write the run's best model (else its final one) as a model folder in the "
                                   "Hugging Face layout: config.json, model.safetensors (adapters and head; the "
                                   "frozen backbone too with --with-backbone), the text folders of a text task, "
                                   "README.md. Load it with AVPEAModel.from_pretrained(DIR) or --model DIR.")
    p.add_argument("--run", required=True, help="a training run folder (train.out)")
    p.add_argument("--out", required=True, help="the model folder to write (new, empty, or an earlier export)")
    p.add_argument("--which", choices=("best", "final"), default="best", help="the run's export to use")
    p.add_argument("--with-backbone", action="store_true", help="include the frozen backbone's weights")
    p.set_defaults(func=export_cmd)

    p = sub.add_parser("demo", help="the CPU demo of a task: synthetic data, 2-rank DeepSpeed training, ablation table",
                       description="Synthesise the task's embedded dataset, build shards, train the task's tiny "
                                   "config with 2 DeepSpeed ranks on CPU for AV-PEA and the audio-only and "
                                   "visual-only ablations, and print the test table against the baseline. Exit 0: "
                                   "the demo's bar is met; 1: it is not; 3: interrupted (rerun to continue).")
    p.add_argument("--task", required=True, help="a registered task with a demo (avel, avqa, retrieval, "
                   "captioning, classification, and any plug-in task whose spec names demo settings)")
    p.add_argument("--out", default=None, help="folder for data, runs and summary.json (default: the task's own, "
                   "runs/demo for avel, runs/demo_<task> for the others)")
    p.add_argument("--config", default=None, help="config to train (default: the task's shipped tiny config)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data (and of the training runs without --seeds)")
    p.add_argument("--seeds", default=None, metavar="S1,S2",
                   help="train every variant once per seed on the same data, e.g. --seeds 0,1; prints mean ± std, n")
    p.add_argument("--clips", type=int, default=0, help="size of the synthetic set (0: the task's default)")
    p.add_argument("--nproc", type=int, default=2, help="ranks per run")
    p.add_argument("overrides", nargs="*", default=[], help="optional dotted overrides applied to every run")
    p.set_defaults(func=demo_cmd)


def train(args: argparse.Namespace) -> int:
    from ..train.entry import main as entry_main

    return entry_main([args.config, *args.overrides])  # reads the config once, behind its own error trap


def evaluate_cmd(args: argparse.Namespace) -> int:
    from ..config_load import load_config

    if args.model is not None:
        from ..train.modelfolder import evaluate_model_folder

        overrides = ([args.config] if args.config else []) + list(args.overrides)
        if any("=" not in o for o in overrides):
            raise ValueError("--model DIR takes no CONFIG (the model folder holds its config); pass --shards SHARDS")
        if not args.shards:
            raise ValueError("--model DIR needs --shards SHARDS: the shards to evaluate it on")
        result = evaluate_model_folder(args.model, args.shards, args.split, overrides)
        return _print_result(args, result, result["task"], args.model)
    if args.config is None:
        raise ValueError("pass CONFIG with --checkpoint (the run's config.yaml)")
    from ..train.evaluate import evaluate_export

    cfg = load_config(args.config, args.overrides)
    try:
        result = evaluate_export(cfg, args.checkpoint, args.split)
    except FileNotFoundError as e:
        from pathlib import Path

        from ..train.runfolder import RUN_MANIFEST

        if Path(cfg.data.shards).is_dir() or not (Path(args.config).parent / RUN_MANIFEST).is_file():
            raise  # not about the shards, or not a run folder's config
        raise FileNotFoundError(f"{e}. The run folder {Path(args.config).parent} keeps a copy of its shards' "
                                f"manifest (enough for predict, search and caption), but evaluation reads the "
                                f"shards themselves") from None
    return _print_result(args, result, cfg.task, args.checkpoint)


def _print_result(args: argparse.Namespace, result: dict, task: str, what: str) -> int:
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(json.dumps(result))
        else:
            from ..train.evaluate import scalars

            sel = result["selection_metric"]
            rest = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in scalars(result).items() if k not in (sel, "trained_step"))
            print(f"{task} {args.split} {sel} {result[sel]:.4f}; {rest}  [{what}]")
    return 0


def export_cmd(args: argparse.Namespace) -> int:
    from ..train.modelfolder import export_run

    out = export_run(args.run, args.out, which=args.which, with_backbone=args.with_backbone)
    print(f"avpea export: wrote {out} (config.json, model.safetensors, README.md); load it with "
          f"`--model {out}` or AVPEAModel.from_pretrained(\"{out}\")")
    return 0


def demo_cmd(args: argparse.Namespace) -> int:
    from ..launch.sweep_seeds import parse_seeds
    from .demo import DemoInterrupted, run_task_demo

    seeds = parse_seeds(args.seeds) if args.seeds is not None else ()
    try:
        summary = run_task_demo(args.task, args.out, config=args.config, seed=args.seed, nproc=args.nproc,
                                overrides=args.overrides, clips=args.clips, seeds=seeds)
    except DemoInterrupted as e:
        print(f"avpea demo: {e}", file=sys.stderr)
        return 3
    return 0 if summary.get("ok") else 1
