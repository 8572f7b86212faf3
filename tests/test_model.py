"""The AV-PEA model: zero-init equivalence with plain timm, frozen weights, gradients, weight loading, counts."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from avpea_dist.cli import main as cli_main
from avpea_dist.config import ModelConfig
from avpea_dist.models.model import AVPEAModel, build_model, param_counts
from avpea_dist.tasks.avel.head import AVELHead

TINY = dict(backbone="vit_tiny_patch16_224", pretrained="none", img_size=64)


def avel_head(embed_dim: int, streams: tuple[str, ...]) -> AVELHead:
    """The model has no default head: these tests put AVEL's (9 classes, hidden 32) on the encoder."""
    return AVELHead(embed_dim * len(streams), 32, 9)


def inputs(batch=2, segments=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, segments, 3, size, size), generator=g, dtype=torch.uint8)
    audio = torch.randn(batch, segments, 128, 102, generator=g)
    return frames, audio


def plain_timm_reference(model: AVPEAModel) -> torch.nn.Module:
    ref = timm.create_model(model.cfg.backbone, pretrained=False, num_classes=0, img_size=model.cfg.img_size,
                            dynamic_img_size=True)
    ref.load_state_dict({k: v for k, v in model.vit.state_dict().items() if ".adapters." not in k})
    return ref.eval()


@pytest.mark.parametrize("extra", [
    {},
    {"fuse_streams": False},
    {"adapter_placement": "both", "adapter_gate": "vector"},
    {"adapter_placement": "attn", "adapter_gate": "zero_up", "adapter_heads": 2, "adapter_norm": False},
])
def test_zero_init_equals_the_frozen_timm_model_for_both_streams(extra):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, **extra), task=avel_head)
    ref = plain_timm_reference(model)
    frames, audio = inputs()
    with torch.no_grad():
        feats = model.features(frames.flatten(0, 1), audio.flatten(0, 1))
        image = (frames.flatten(0, 1).float() - model.tokenizer.mean) / model.tokenizer.std
        ref_v = ref.forward_features(image)[:, 0]
        # The spectrogram read as a 3-channel image; timm's patch embedding floors 102 frames to 6 patches.
        spec = audio.flatten(0, 1)[..., :96].unsqueeze(1).expand(-1, 3, -1, -1)
        ref_a = ref.forward_features(spec)[:, 0]
    torch.testing.assert_close(feats["v"], ref_v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["a"], ref_a, atol=1e-5, rtol=1e-5)


def test_training_moves_only_adapters_and_head_and_grads_reach_every_adapter():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY), task=avel_head)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trainable
    assert all(".adapters." in n or n.startswith("head.") for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frames, audio = inputs()
    labels = torch.randint(0, 9, frames.shape[:2])
    for _ in range(3):  # gates start at 0: the first step moves them, later steps reach down/up
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(frames, audio).flatten(0, 1), labels.flatten())
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert p.grad is None, f"frozen {n} got a gradient"
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {n}"
            assert not torch.equal(p, trainable[n]), f"trainable {n} did not move"


def test_adapters_exchange_information_between_streams():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY), task=avel_head)
    for n, p in model.named_parameters():
        if n.endswith(".gate"):
            p.data.fill_(1.0)
    frames, audio = inputs()
    with torch.no_grad():
        before = model.features(frames.flatten(0, 1), audio.flatten(0, 1))["v"]
        after = model.features(frames.flatten(0, 1), (audio + 1).flatten(0, 1))["v"]
    assert not torch.allclose(before, after), "changing the audio must change the visual stream's features"


@pytest.mark.parametrize("modalities, streams", [("audio", ("a",)), ("visual", ("v",))])
def test_single_modality_ablations(modalities, streams):
    model = build_model(ModelConfig(**TINY, modalities=modalities), task=avel_head)
    frames, audio = inputs()
    logits = model(frames if "v" in streams else None, audio if "a" in streams else None)
    assert logits.shape == (2, 3, 9)
    assert model.head.fc1.in_features == model.vit.embed_dim


def test_linear_probe_trains_the_head_only():
    model = build_model(ModelConfig(**TINY, adapters=False), task=avel_head)
    counts = param_counts(model)
    assert counts["adapter_params"] == 0 and counts["trainable_params"] == counts["head_params"]


def test_local_safetensors_weights_load_and_bad_files_are_refused(tmp_path):
    torch.manual_seed(1)
    donor = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=21843)  # with a 21k head
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    model = build_model(ModelConfig(**{**TINY, "img_size": 224, "pretrained": str(path)}), task=avel_head)
    report = model.weights_report
    assert report["dropped_head_keys"] == ["head.bias", "head.weight"]
    assert report["missing_adapter_keys"] > 0
    assert torch.equal(model.vit.blocks[3].mlp.fc1.weight, donor.blocks[3].mlp.fc1.weight)

    bad = dict(donor.state_dict(), **{"blocks.0.extra.weight": torch.zeros(3)})
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="keys backbone .* does not have"):
        build_model(ModelConfig(**{**TINY, "pretrained": str(tmp_path / "bad.safetensors")}), task=avel_head)

    partial = {k: v for k, v in donor.state_dict().items() if not k.startswith("blocks.1.")}
    save_file({k: v.contiguous() for k, v in partial.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="only adapter keys may be missing"):
        build_model(ModelConfig(**{**TINY, "pretrained": str(tmp_path / "partial.safetensors")}), task=avel_head)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model(ModelConfig(**{**TINY, "pretrained": str(tmp_path / "nope.safetensors")}), task=avel_head)


def test_position_embeddings_are_resampled_when_the_file_has_another_resolution(tmp_path):
    donor = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "w.pt"
    torch.save(donor.state_dict(), path)  # a plain tensor file, read with weights_only=True
    model = build_model(ModelConfig(**{**TINY, "pretrained": str(path)}), task=avel_head)  # img_size 64: 4x4 grid
    assert model.vit.pos_embed.shape == (1, 17, 192)


def test_pickled_code_in_a_torch_weight_file_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"pos_embed": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        build_model(ModelConfig(**{**TINY, "pretrained": str(path)}), task=avel_head)
    assert not marker.exists()


def test_model_info_for_the_paper_configuration(capsys):
    assert cli_main(["model-info", "configs/avel_vitl.yaml", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["backbone_params"] == 303_301_632  # timm ViT-L/16 without its classifier head
    assert abs(counts["adapter_params"] - 12.9e6) / 12.9e6 < 0.03  # the paper's 12.9M
    assert counts["head_params"] == 2048 * 512 + 512 + 512 * 29 + 29
    assert counts["trainable_params"] == counts["adapter_params"] + counts["head_params"]
    total = counts["backbone_params"] + counts["adapter_params"] + counts["head_params"]
    assert counts["total_params"] == total
    assert counts["trainable_share"] == pytest.approx(counts["trainable_params"] / total)


def test_model_info_counts_the_configured_tasks_own_head(capsys, tmp_path):
    """An AVQA config counts the AVST head (sized by the example vocabulary without shards), not AVEL's."""
    from avpea_dist.config_load import load_config
    from avpea_dist.models.model import build_model, param_counts
    from avpea_dist.tasks.avqa.task import AVQATask, example_manifest

    assert cli_main(["model-info", "configs/avqa_tiny.yaml", f"data.shards={tmp_path / 'none'}", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["task"] == "avqa" and counts["head"] == "AVQATaskHead"
    assert counts["head_sized_by"].startswith("the task's example manifest")
    cfg = load_config("configs/avqa_tiny.yaml")
    built = param_counts(build_model(cfg.model, load_weights=False, task=AVQATask(cfg, example_manifest())))
    assert counts["head_params"] == built["head_params"] and counts["total_params"] == built["total_params"]


def test_model_info_reports_a_config_error(capsys):
    assert cli_main(["model-info", "configs/avel_tiny.yaml", "model.botleneck=3"]) == 2
    assert "did you mean 'model.bottleneck'" in capsys.readouterr().err
