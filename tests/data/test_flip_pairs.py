"""Flip pairs live with the dataset: the synthetic generator writes them, its recipe reads them from the data,
and the recipe pointed at other data never swaps that data's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from video_attn.config import ConfigError, load_config
from video_attn.data.datasets.action_build import build_action_dataset, flip_label_map
from video_attn.data.synthetic.action import CLASS_NAMES, flip_pairs, make_action_dataset
from video_attn.data.transforms import RandomHorizontalFlip

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "tanet_r18.yaml"
SMALL = ["data.backend=pyav", "data.input_size=[32,32]", "data.scale_size=32", "model.num_segments=4"]


def _flip_op(dataset) -> RandomHorizontalFlip:
    (op,) = [op for op in dataset.transform.ops if isinstance(op, RandomHorizontalFlip)]
    return op


def _labels_over_draws(dataset, row: int, draws: int = 12) -> set[int]:
    """The labels item ``row`` takes over ``draws`` random draws (each flips with probability 1/2)."""
    return {dataset.load(row, np.random.default_rng([7, s]))["label"] for s in range(draws)}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_flip")
    make_action_dataset(root, num_classes=4, train_per_class=1, val_per_class=1, min_frames=8, max_frames=8,
                        size=32)
    return root


def test_generator_pairs_are_the_mirrored_directions():
    assert flip_pairs(2) == flip_pairs(4) == [(0, 1)]
    assert flip_pairs(8) == [(0, 1), (4, 5), (6, 7)]
    for a, b in flip_pairs(8):  # the names agree: a flip turns "left" into "right" and nothing else
        assert CLASS_NAMES[a].replace("left", "right") == CLASS_NAMES[b]


def test_synthetic_recipe_flips_the_pairs_of_its_data(synthetic_root):
    assert (synthetic_root / "flip_pairs.txt").read_text().splitlines()[1:] == ["0 1"]
    cfg = load_config(RECIPE, [f"data.root={synthetic_root}", *SMALL])
    dataset = build_action_dataset(cfg, "train", num_classes=None)
    assert _flip_op(dataset).label_map == {0: 1, 1: 0}
    for label, expected in ((0, {0, 1}), (1, {0, 1}), (2, {2}), (3, {3})):
        row = dataset.labels.index(label)
        assert _labels_over_draws(dataset, row) == expected, label


def test_synthetic_recipe_pointed_at_other_data_never_swaps_its_classes(video_dir, tmp_path):
    ann = tmp_path / "mine.txt"
    ann.write_text("good.mp4 0\nother.mp4 1\n")
    user = [f"data.root={video_dir}", f"data.train.ann_file={ann}", "data.labels_file=null", *SMALL]
    with pytest.raises(FileNotFoundError, match=r"data.flip_pairs_file flip_pairs.txt not found .*=null"):
        build_action_dataset(load_config(RECIPE, user), "train", num_classes=None)
    dataset = build_action_dataset(load_config(RECIPE, [*user, "data.flip_pairs_file=null"]), "train",
                                   num_classes=None)
    assert _flip_op(dataset).label_map == {}
    assert _labels_over_draws(dataset, 0) == {0} and _labels_over_draws(dataset, 1) == {1}


def test_flip_pairs_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("# comment\n0 1\n2 left\n")
    cfg = load_config(RECIPE, [f"data.root={tmp_path}", "data.flip_pairs_file=pairs.txt"])
    with pytest.raises(ValueError, match=r"pairs.txt:3: expected two class indices"):
        flip_label_map(cfg.data)
    with pytest.raises(ConfigError, match="data.flip_label_map and data.flip_pairs_file are both set"):
        load_config(RECIPE, ["data.flip_label_map={0: 1}"])
