"""The synthetic task carries the event in the *pair*: nearest-neighbour on raw features of one modality
cannot localise events, on both it can (measured on the shards the training tests use)."""

from pathlib import Path

import torch

from avpea_dist.data.loaders import make_eval_loader
from avpea_dist.data.manifest import read_manifest
from avpea_dist.tasks.avel.codec import AVELCodec


def _features(shards: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    vis, aud, labels = [], [], []
    codec = AVELCodec(len(read_manifest(shards)["classes"]))
    for b in make_eval_loader(shards, split, codec=codec, batch_size=8, img_size=32, num_workers=0, rank=0,
                              world_size=1):
        f = b["frames"].float().flatten(0, 1) / 255  # one row per segment
        vis.append(torch.cat([f.mean((2, 3)), f[:, :, ::8, ::8].flatten(1)], 1))  # colour and coarse layout
        aud.append(b["audio"].flatten(0, 1).mean(2))  # mel profile
        labels.append(b["labels"].flatten())
    return torch.cat(vis), torch.cat(aud), torch.cat(labels)


def test_events_need_both_modalities(synth_shards: Path) -> None:
    vt, at, yt = _features(synth_shards, "train")
    queries = [_features(synth_shards, s) for s in ("val", "test")]
    vq, aq, yq = (torch.cat(x) for x in zip(*queries))

    def nn_accuracy(train: torch.Tensor, query: torch.Tensor) -> float:
        mu, sd = train.mean(0), train.std(0) + 1e-3
        nearest = torch.cdist((query - mu) / sd, (train - mu) / sd).argmin(1)
        return (yt[nearest] == yq).float().mean().item()

    def scale(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=1, keepdim=True).mean()

    both = nn_accuracy(torch.cat([scale(vt), scale(at)], 1), torch.cat([scale(vq), scale(aq)], 1))
    visual, audio = nn_accuracy(vt, vq), nn_accuracy(at, aq)
    majority = (yq == yq.mode().values).float().mean().item()
    assert both > 0.9, (both, visual, audio)
    assert max(visual, audio) < 0.8 and both - max(visual, audio) > 0.2, (both, visual, audio)
    assert 0.35 < majority < 0.65  # background about half the segments, as in AVE
