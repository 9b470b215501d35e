"""The config contract: YAML, _base_ inheritance, dotted overrides, typed schema."""

from pathlib import Path

import pytest
import torch

from video_attn.config import ConfigError, config_from_dict, load_config, parse_override

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_have_the_required_keys(tmp_path):
    cfg = load_config(write(tmp_path / "empty.yaml", ""))
    for key in (
        "work_dir",
        "seed",
        "device",
        "model.num_classes",
        "data.root",
        "data.train.ann_file",
        "data.val.ann_file",
        "data.test.ann_file",
        "train.epochs",
        "train.batch_size",
        "train.lr",
        "data.num_workers",
        "eval.protocol",
    ):
        assert key in cfg, key
    assert cfg.device == "auto"


def test_base_inheritance_chain_and_override_order(tmp_path):
    write(tmp_path / "_base_" / "root.yaml", "train: {lr: 0.1, epochs: 5}\nmodel: {backbone: {depth: 18}}\n")
    write(tmp_path / "_base_" / "mid.yaml", "_base_: root.yaml\ntrain: {epochs: 7}\n")
    child = write(tmp_path / "exp" / "child.yaml", "_base_: [../_base_/mid.yaml]\nseed: 3\n")
    cfg = load_config(child, ["train.lr=0.5", "model.backbone.attention=[se, se, none, none]"])
    assert cfg.train.lr == 0.5 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 7  # mid overrides root
    assert cfg.seed == 3
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.attention == ["se", "se", "none", "none"]
    # item access with dotted keys equals attribute access
    assert cfg["model.backbone.depth"] == cfg.model.backbone.depth == cfg["model"]["backbone"]["depth"]
    # untouched defaults survive a partial section
    assert cfg.train.momentum == 0.9


def test_int_is_accepted_for_float_but_not_the_reverse(tmp_path):
    path = write(tmp_path / "c.yaml", "train: {lr: 1}\n")
    assert load_config(path).train.lr == 1.0
    with pytest.raises(ConfigError, match="'train.batch_size' must be an integer"):
        load_config(path, ["train.batch_size=1.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'; valid keys here: epochs, iters, batch_size, lr"),
        ("modle.arch=tsn", "unknown config key 'modle'"),
        ("device=gpu", "'device' got 'gpu'; valid choices: 'auto', 'cpu', 'cuda'"),
        ("model.backbone.depth=51", "'model.backbone.depth' got 51; valid choices: 18, 34, 50, 101"),
        ("train.amp=yes please", "'train.amp' must be true or false"),
        ("model.temporal_stages=[1, x]", "'model.temporal_stages[1]' must be an integer"),
        ("model.temporal_kwargs=3", "'model.temporal_kwargs' must be a mapping"),
        ("model.arch=3", "'model.arch' must be a string"),
        ("train=3", "'train' must be a mapping"),
        ("notakeyvalue", "not of the form KEY=VALUE"),
    ],
)
def test_bad_keys_and_types_name_the_key(tmp_path, override, message):
    path = write(tmp_path / "c.yaml", "")
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert message in str(info.value)


def test_temporal_kwargs_keys_are_overridable_one_by_one(tmp_path):
    path = write(tmp_path / "c.yaml", "model:\n  arch: tanet\n  temporal_kwargs: {alpha: 1, beta: 2}\n")
    cfg = load_config(path, ["model.temporal_kwargs.kernel_size=5", "model.temporal_kwargs.beta=8"])
    assert cfg.model.temporal_kwargs == {"alpha": 1, "beta": 8, "kernel_size": 5}
    # a key absent from every file, and a whole mapping replacing the file's
    cfg = load_config(write(tmp_path / "d.yaml", ""), ["model.temporal_kwargs.dilations=[1, 2]"])
    assert cfg.model.temporal_kwargs == {"dilations": [1, 2]}
    cfg = load_config(path, ["model.temporal_kwargs={kernel_size: 5}"])
    assert cfg.model.temporal_kwargs == {"kernel_size": 5}
    # a child file's temporal_kwargs merge into its base's
    child = write(tmp_path / "child.yaml", "_base_: c.yaml\nmodel:\n  temporal_kwargs: {kernel_size: 5}\n")
    assert load_config(child).model.temporal_kwargs == {"alpha": 1, "beta": 2, "kernel_size": 5}


def test_arch_is_checked_by_the_model_builder_against_the_registries(tmp_path):
    from video_attn.models import ACTION_ARCHS, REID_ARCHS, build_model

    cfg = load_config(write(tmp_path / "c.yaml", ""), ["model.arch=tanett"])  # any string loads
    with pytest.raises(ValueError) as info:
        build_model(cfg.model)
    assert str(info.value).startswith("model.arch='tanett' is not a registered model")
    assert all(name in str(info.value) for name in ACTION_ARCHS + REID_ARCHS)


def test_every_shipped_config_sets_valid_temporal_kwargs():
    from video_attn.models.temporal.registry import (
        ACTION_TEMPORAL_MODULES,
        REID_TEMPORAL_MODULES,
        check_temporal_kwargs,
    )

    registry = {**ACTION_TEMPORAL_MODULES, **REID_TEMPORAL_MODULES}
    for path in sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "_base_" not in p.parts):
        model = load_config(path).model
        supplied = ("in_channels", "num_segments")  # set by the model builders, never by the config
        check_temporal_kwargs(model.arch, registry[model.arch], model.temporal_kwargs, supplied)


def test_unknown_key_in_a_file_is_named(tmp_path):
    path = write(tmp_path / "c.yaml", "data:\n  train: {ann_fil: x.txt}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'data.train.ann_fil'.*ann_file"):
        load_config(path)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path / "bad.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    loop_a = write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular _base_"):
        load_config(loop_a)


def test_override_values_are_parsed_as_yaml():
    assert parse_override("a.b=null") == (["a", "b"], None)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert parse_override("a=") == (["a"], "")


def test_round_trip_through_a_weights_only_checkpoint(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", "data: {flip_label_map: {86: 87, 87: 86}}\n"))
    torch.save({"config": cfg.to_dict()}, tmp_path / "ckpt.pt")
    stored = torch.load(tmp_path / "ckpt.pt", weights_only=True)["config"]
    again = config_from_dict(stored)
    assert again == cfg
    assert again.data.flip_label_map == {86: 87, 87: 86}


def test_every_shipped_config_loads():
    paths = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "_base_" not in p.parts)
    for path in paths:
        cfg = load_config(path)
        # unset: taken from the training set
        assert cfg.model.num_classes is None or cfg.model.num_classes > 0, path
