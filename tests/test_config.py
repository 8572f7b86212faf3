"""Config: defaults, YAML, dotted overrides, and the documented errors for every kind of mistake."""

import pytest

from avpea_dist.config import Config, ConfigError

from avpea_dist.config_load import config_from_dict, dump_yaml, load_config, read_yaml

import yaml


def test_defaults_are_the_paper_configuration():
    cfg = Config(task="avel")
    assert cfg.model.backbone.startswith("vit_large_patch16_224")
    assert (cfg.model.mel_bins, cfg.model.audio_frames, cfg.model.num_segments) == (128, 102, 10)


def test_yaml_then_overrides_apply_in_order():
    cfg = load_config("configs/avel_tiny.yaml", ["model.bottleneck=64", "optim.betas=[0.8, 0.9]",
                                                 "train.deterministic=true", "optim.lr_head=1"])
    assert cfg.model.backbone == "vit_tiny_patch16_224"  # from the file
    assert cfg.model.bottleneck == 64 and cfg.optim.betas == [0.8, 0.9]
    assert cfg.train.deterministic is True
    assert cfg.optim.lr_head == 1.0 and isinstance(cfg.optim.lr_head, float)  # ints widen to float
    assert load_config(None, ["task=avel", "optim.lr_adapter=1e-3"]).optim.lr_adapter == 1e-3  # YAML reads this as a string


def test_both_shipped_configs_load():
    assert load_config("configs/avel_vitl.yaml").model.bottleneck == 128
    assert load_config("configs/avel_tiny.yaml").avel.num_classes == 9


def test_unknown_override_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.botleneck'.*did you mean 'model.bottleneck'"):
        load_config(None, ["model.botleneck=3"])


def test_key_in_the_wrong_section_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"did you mean 'optim.lr_head'"):
        load_config(None, ["train.lr_head=0.1"])


def test_unknown_yaml_key_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  bottlenek: 3\n")
    with pytest.raises(ConfigError, match=r"'model.bottlenek' in config file '.*c.yaml'.*'model.bottleneck'"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("model.bottleneck=abc", r"model.bottleneck must be of type int"),
    ("model.adapters=3", r"model.adapters must be of type bool"),
    ("optim.lr_adapter=fast", r"optim.lr_adapter must be of type float"),
    ("optim.betas=0.9", r"optim.betas must be a list"),
    ("model.modalities=audiovisual", r"model.modalities='audiovisual' is not allowed; choose one of 'av', 'audio', 'visual'"),
    ("dist.zero_stage=3", r"dist.zero_stage=3 is not allowed; choose one of 0, 1, 2"),
    ("optim.grad_accum=0", r"optim.grad_accum=0 must be > 0"),
    ("model.adapter_heads=5", r"model.adapter_heads=5 must divide model.bottleneck"),
    ("model=3", r"'model' is a section"),
    ("bottleneck", r"must look like section.key=value"),
])
def test_bad_values_give_the_documented_error(override, message):
    extra = ["model.bottleneck=64"] if "adapter_heads" in override else []
    with pytest.raises(ConfigError, match=message):
        load_config(None, extra + [override])


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_python_tags_in_yaml_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


def test_missing_file_and_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(tmp_path / "list.yaml")


def test_round_trip_through_yaml():
    cfg = load_config("configs/avel_tiny.yaml", ["model.bottleneck=32"])
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_a_config_must_name_its_task():
    with pytest.raises(ConfigError, match=r"no task given; set 'task:' in the config to one of 'avel', 'avqa'"):
        load_config(None)
    with pytest.raises(ConfigError, match=r"unknown task 'avle'; choose one of 'avel'"):
        load_config(None, ["task=avle"])


def test_task_sections_are_typed_by_their_spec_and_round_trip():
    cfg = load_config("configs/avqa_tiny.yaml", ["avqa.hidden=64"])
    assert cfg.task_section is cfg.avqa and cfg.avqa.hidden == 64 and set(cfg.sections) == {"avqa"}
    again = config_from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again.to_dict() == cfg.to_dict() and type(again.avqa) is type(cfg.avqa)
    with pytest.raises(AttributeError, match="no attribute or task section 'retrieval'"):
        cfg.retrieval


def test_avel_keys_of_an_older_file_move_into_the_avel_section(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("task: avel\nmodel:\n  num_classes: 5\n  head_hidden: 64\ntrain:\n  loss: bce_softmax\n")
    cfg = load_config(old)
    assert (cfg.avel.num_classes, cfg.avel.head_hidden, cfg.avel.loss) == (5, 64, "bce_softmax")
    other = tmp_path / "other.yaml"  # they never applied to another task: dropped, not an error
    other.write_text("task: avqa\nmodel:\n  num_classes: 5\n")
    assert set(load_config(other).sections) == {"avqa"}
    with pytest.raises(ConfigError, match=r"unknown config key 'model.num_classes'.*did you mean 'avel.num_classes'"):
        load_config(None, ["task=avel", "model.num_classes=3"])
