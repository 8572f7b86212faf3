"""Linear probe: do a random-init frozen ViT's features carry the facts the embedded AVQA questions ask about?

Renders the scenes of ``avpea shards synth musicavqa`` (frames at 64 px, one fbank second as a 128x96 image,
as the model sees them), runs a random-init frozen ``vit_tiny_patch16_224`` once, and fits a linear layer
(Adam, 300 steps) from its CLS token and from its patch tokens to: the instrument at each place, the set of
instruments sounding in a second, the loudest of them, and their number. Train on the first 3/4 of the
scenes, report accuracy on the rest beside the majority answer. Prints a table; writes nothing.

    python benchmarks/synth_probe.py --scenes 480
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image


def fit(feats: torch.Tensor, y: torch.Tensor, multi: bool = False) -> float:
    n = len(feats) * 3 // 4
    f = (feats - feats[:n].mean(0)) / (feats[:n].std(0) + 1e-6)
    lin = torch.nn.Linear(f.shape[1], y.shape[1] if multi else int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-3)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits if multi else torch.nn.functional.cross_entropy
    for _ in range(300):
        opt.zero_grad()
        loss_fn(lin(f[:n]), y[:n]).backward()
        opt.step()
    with torch.no_grad():
        out = lin(f[n:])
    hit = ((out > 0).float() == y[n:]) if multi else (out.argmax(1) == y[n:])
    return hit.float().mean().item()


def majority(y: torch.Tensor, multi: bool = False) -> float:
    n = len(y) * 3 // 4
    if multi:
        return ((y[:n].mean(0) > 0.5).float() == y[n:]).float().mean().item()
    return (y[n:] == y[:n].mode().values).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=480)
    ap.add_argument("--second", type=int, default=7, help="the second whose sound is probed")
    args = ap.parse_args()
    import timm

    from avpea_dist.data.features import fbank_segments, normalise_fbank
    from avpea_dist.datasets.musicavqa.synth import make_scenes
    from avpea_dist.datasets.musicavqa.synth_scene import INSTRUMENTS, render_audio, render_frames

    torch.manual_seed(0)
    scenes = make_scenes(args.scenes, 0)
    frames, fbanks, at, heard, loudest, count = [], [], [], [], [], []
    for n, s in enumerate(scenes):
        rng = np.random.default_rng(n)
        frames.append(np.asarray(Image.fromarray(render_frames(s, 96, 1, rng)[0]).resize((64, 64), Image.BILINEAR)))
        fbanks.append(normalise_fbank(fbank_segments(render_audio(s, 16000, rng), 10)[args.second])[:, :96])
        at.append([0 if s.at(k) is None else 1 + s.at(k).instrument for k in range(3)])
        on = [p for p in s.sounding if p.sound.onset <= args.second < p.sound.end]
        heard.append([float(any(p.instrument == k for p in on)) for k in range(len(INSTRUMENTS))])
        loudest.append(1 + max(on, key=lambda p: p.sound.level).instrument if on else 0)
        count.append(len(on))
    with torch.no_grad():
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=0).eval()
        v = vit.forward_features((torch.tensor(np.stack(frames)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(128, 96), num_classes=0).eval()
        a = vit.forward_features(torch.tensor(np.stack(fbanks))[:, None].repeat(1, 3, 1, 1))
    at_t, heard_t = torch.tensor(at), torch.tensor(heard)
    rows = [(f"instrument at the {slot}", v, at_t[:, k], False) for k, slot in enumerate(("left", "middle", "right"))]
    rows += [(f"sounding in second {args.second} (per instrument)", a, heard_t, True),
             (f"loudest in second {args.second}", a, torch.tensor(loudest), False),
             (f"how many sound in second {args.second}", a, torch.tensor(count), False)]
    print(f"{'decoded':<40} {'CLS':>6} {'patches':>8} {'majority':>9}   ({args.scenes} scenes, test on the last 1/4)")
    for name, feats, y, multi in rows:
        print(f"{name:<40} {fit(feats[:, 0], y, multi):>6.2f} {fit(feats[:, 1:].flatten(1), y, multi):>8.2f} "
              f"{majority(y, multi):>9.2f}")


if __name__ == "__main__":
    main()
