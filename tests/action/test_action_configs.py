"""Every action config loads, builds the right model type, and pins the official recipe facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_attn.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ACTION = sorted((CONFIGS / "action").glob("*.yaml"))
SYNTHETIC = [CONFIGS / "synthetic" / "tanet_r18.yaml", CONFIGS / "synthetic" / "tsn_r18.yaml"]


def test_expected_configs_exist():
    names = {p.name for p in ACTION}
    for name in (
        "tanet_r50_kinetics400_8f",
        "tanet_r50_kinetics400_16f",
        "tanet_r50_sthv1_8f",
        "tanet_r50_sthv2_8f",
        "tsn_r50_kinetics400_8f",
        "tsm_r50_kinetics400_8f",
        "tsn_r50_sthv2_8f",
        "tsm_r50_sthv2_8f",
    ):
        assert f"{name}.yaml" in names


@pytest.mark.parametrize("path", ACTION + SYNTHETIC, ids=lambda p: p.name)
def test_config_loads_and_names_its_protocol(path):
    cfg = load_config(path)
    assert cfg.task == "action"
    assert cfg.model.arch == path.name.split("_")[0]
    for split in ("train", "val", "test"):
        assert cfg.data[split].ann_file
    assert cfg.train.clip_grad == 20.0
    text = path.read_text()
    assert text.startswith("#")  # header comment with the numbers / protocol
    if path.parent.name == "action":
        assert cfg.model.backbone.depth == 50 and "top-1" in text


def test_kinetics_recipe():
    cfg = load_config(CONFIGS / "action" / "tanet_r50_kinetics400_8f.yaml")
    assert (cfg.model.num_segments, cfg.data.frame_interval, cfg.data.train.sampler) == (8, 8, "dense")
    assert (cfg.data.test.num_clips, cfg.data.test.crop, cfg.data.scale_size) == (10, "three", 256)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.epochs) == (0.01, 1e-4, 100)
    assert cfg.train.milestones == [50, 75, 90] and cfg.model.dropout == 0.5
    assert cfg.train.batch_size * 8 == cfg.train.base_batch_size == 64 and cfg.train.scale_lr
    assert (cfg.train.fc_lr_mult, cfg.train.fc_bias_lr_mult) == (5.0, 10.0)
    assert cfg.eval.average == "logits"
    # official TAM: alpha 2, beta 4, K 3 in every block of layer1..layer4; TSM shifts 1/8 each way
    assert cfg.model.temporal_kwargs == {"alpha": 2, "beta": 4, "kernel_size": 3}
    assert (cfg.model.temporal_stages, cfg.model.temporal_every) == ([1, 2, 3, 4], 1)
    tsm = load_config(CONFIGS / "action" / "tsm_r50_kinetics400_8f.yaml")
    assert tsm.model.temporal_kwargs == {"shift_div": 8} and tsm.model.temporal_stages == [1, 2, 3, 4]
    cfg16 = load_config(CONFIGS / "action" / "tanet_r50_kinetics400_16f.yaml")
    assert (cfg16.model.num_segments, cfg16.data.frame_interval) == (16, 4)


def test_something_something_recipes():
    v1 = load_config(CONFIGS / "action" / "tanet_r50_sthv1_8f.yaml")
    assert v1.data.flip is False and v1.model.dropout == 0.6 and v1.model.num_classes == 174
    assert (v1.train.lr, v1.train.weight_decay, v1.train.epochs, v1.train.milestones) == (
        0.01,
        1e-3,
        50,
        [30, 40, 45],
    )
    assert (v1.data.test.num_clips, v1.data.test.crop) == (1, "center")
    v2 = load_config(CONFIGS / "action" / "tanet_r50_sthv2_8f.yaml")
    assert v2.data.flip and v2.data.flip_label_map == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert (v2.train.lr, v2.train.weight_decay, v2.train.base_batch_size) == (0.02, 5e-4, 128)
    assert (v2.data.test.num_clips, v2.data.test.crop) == (2, "three")
    assert (
        load_config(CONFIGS / "action" / "tsm_r50_sthv2_8f.yaml").data.flip_label_map
        == v2.data.flip_label_map
    )


def test_synthetic_configs():
    tanet = load_config(CONFIGS / "synthetic" / "tanet_r18.yaml")
    tsn = load_config(CONFIGS / "synthetic" / "tsn_r18.yaml")
    assert tanet.data.root == "data/synthetic_action" and tanet.data.train.ann_file == "train.txt"
    assert (tanet.model.backbone.depth, tanet.model.num_segments, tanet.data.input_size) == (18, 8, [64, 64])
    assert tanet.data.num_workers == 2 and tanet.device == "cpu"
    # the flip pairs (left 0 <-> right 1) come from the generated data, not from the config
    assert tanet.data.flip_pairs_file == "flip_pairs.txt" and not tanet.data.flip_label_map
    assert tsn.model.arch == "tsn" and tsn.train == tanet.train and tsn.model.backbone == tanet.model.backbone
