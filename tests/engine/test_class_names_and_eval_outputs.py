"""Class names (``data.labels_file`` and the official label files), ``model.num_classes`` taken from the
training set, and the per-video predictions and confusion matrix that evaluation writes next to its JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from engine_testkit import action_config, reid_config, tiny_config, write_config
from PIL import Image

from video_attn.apis import evaluate, train
from video_attn.config import ConfigError
from video_attn.data.datasets.action_base import read_class_names
from video_attn.data.datasets.action_build import action_class_names
from video_attn.engine.checkpoint import atomic_save, load_checkpoint
from video_attn.models import build_model
from video_attn.tasks import build_task


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def unset_run(synthetic_action, tmp_path_factory):
    """TSN trained one epoch with model.num_classes unset and the generator's classes.txt as labels file."""
    work = tmp_path_factory.mktemp("unset_run")
    cfg = action_config(
        synthetic_action,
        work,
        model={"arch": "tsn", "num_classes": None},
        data={"labels_file": "classes.txt"},
        train={"epochs": 1},
    )
    train(cfg)
    return cfg, work


def test_num_classes_and_class_names_come_from_the_labels_file(unset_run, synthetic_action):
    cfg, work = unset_run
    assert cfg.model.num_classes is None  # the caller's config is left as given
    names = (synthetic_action / "classes.txt").read_text().splitlines()
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(work / "checkpoints" / name)
        assert ckpt["config"]["model"]["num_classes"] == 3
        assert ckpt["model"]["classifier.weight"].shape[0] == 3
        assert ckpt["class_names"] == names == ["move_left", "move_right", "move_up"]


def test_eval_tool_writes_named_predictions_that_agree_with_its_metrics(
    unset_run, synthetic_action, tmp_path, capsys, load_tool
):
    cfg, work = unset_run
    cfg_path = write_config(cfg, tmp_path / "c.yaml")  # model.num_classes: null, read from the checkpoint
    last = work / "checkpoints" / "last.pt"
    argv = [str(cfg_path), "--checkpoint", str(last), "--split", "val"]
    assert load_tool("eval").main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = work / "eval"  # the default: <work_dir>/eval/<checkpoint name>_<split>.json
    assert json.loads((out / "last_val.json").read_text()) == printed
    assert sorted(p.name for p in out.iterdir()) == [
        "last_val.json",
        "last_val_confusion.npy",
        "last_val_confusion.png",
        "last_val_predictions.csv",
        "last_val_predictions.npz",
    ]

    names = (synthetic_action / "classes.txt").read_text().splitlines()
    listed = [line.split() for line in (synthetic_action / "val.txt").read_text().splitlines()]
    rows = read_rows(out / "last_val_predictions.csv")
    assert len(rows) == printed["num_videos"] == len(listed) == 9
    for row, (rel_path, label) in zip(rows, listed):
        assert row["path"] == str(synthetic_action / rel_path) and row["label"] == label
        assert row["label_name"] == names[int(label)] and row["pred_name"] == names[int(row["pred"])]
        assert row["pred"] == row["top1"] and {row[f"top{k}_name"] for k in (1, 2, 3)} == set(names)
        probs = [float(row[f"top{k}_prob"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-4)
    top1 = 100.0 * np.mean([row["pred"] == row["label"] for row in rows])
    assert top1 == pytest.approx(printed["top1"])
    cm = np.load(out / "last_val_confusion.npy")
    assert cm.shape == (3, 3) and cm.sum() == 9
    assert 100.0 * np.trace(cm) / cm.sum() == pytest.approx(printed["top1"])
    assert (out / "last_val_confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_action_num_classes_without_labels_file_is_the_largest_label_plus_one(synthetic_action, tmp_path):
    train_list = tmp_path / "train.txt"
    train_list.write_text("videos/train_00000.mp4 0\nvideos/train_00001.mp4 4\n")
    cfg = action_config(
        synthetic_action,
        tmp_path / "w",
        model={"num_classes": None},
        data={"train": {"ann_file": str(train_list)}},
    )
    task = build_task(cfg)
    dataset = task.build_train_dataset()
    assert task.cfg.model.num_classes == 5
    assert task.class_names(dataset) == ["0", "1", "2", "3", "4"]


def test_labels_file_that_disagrees_with_the_model_or_the_data_is_an_error(synthetic_action, tmp_path):
    four = tmp_path / "four.txt"
    four.write_text("a\nb\nc\nd\n")
    # model.num_classes=3 is set
    with pytest.raises(ValueError, match=r"four.txt names 4 classes but model.num_classes=3$"):
        train(action_config(synthetic_action, tmp_path / "a", data={"labels_file": str(four)}))
    assert not (tmp_path / "a" / "checkpoints").exists()
    # unset: the file's 2 names cannot cover the training labels 0..2
    two = tmp_path / "two.txt"
    two.write_text("a\nb\n")
    cfg = action_config(
        synthetic_action, tmp_path / "b", model={"num_classes": None}, data={"labels_file": str(two)}
    )
    with pytest.raises(ValueError, match=r"model.num_classes=2 but the training labels span \[0, 2\]"):
        build_task(cfg).build_train_dataset()


def test_labels_file_rules(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text(" open door \nclose door\n\n\n")  # trailing blank lines are ignored
    assert read_class_names(str(path)) == ["open door", "close door"]
    path.write_text("a\n\nb\n")  # a blank line would shift the indices of every later name
    with pytest.raises(ValueError, match=r"names.txt:2: empty class name"):
        read_class_names(str(path))
    path.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"names.txt:3: class name 'a' repeats line 1"):
        read_class_names(str(path))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_class_names(str(tmp_path / "missing.txt"))


def test_official_label_files_name_kinetics_and_sthv2_classes(tmp_path):
    cfg = tiny_config(
        tmp_path, data={"format": "kinetics", "root": str(tmp_path), "train": {"ann_file": "k.csv"}}
    )
    assert action_class_names(cfg, 2) == ["0", "1"]  # no CSV on this machine: the indices
    (tmp_path / "k.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzumba,a,0,10,train\nabseiling,b,0,10,train\n"
    )
    assert action_class_names(cfg, 2) == ["abseiling", "zumba"]  # sorted, as the dataset indexes them
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "something-something-v2-labels.json").write_text(
        json.dumps({"Pushing something": "1", "Holding something": "0"})
    )
    cfg = tiny_config(
        tmp_path, data={"format": "sthv2", "root": str(tmp_path), "train": {"ann_file": "labels/train.json"}}
    )
    assert action_class_names(cfg, 2) == ["Holding something", "Pushing something"]
    with pytest.raises(ValueError, match=r"something-something-v2-labels.json names 2 classes"):
        action_class_names(cfg, 3)


def _frame_list_checkpoint(tmp_path: Path):
    """Three 4-frame folders labelled 0, 1, 2 under frame_list layout, and an untrained 3-class TSN saved
    with its config (model.num_classes=3) and the class names a, b, c."""
    root = tmp_path / "frames"
    rng = np.random.default_rng(0)
    for v in range(3):
        (root / f"v{v}").mkdir(parents=True)
        for i in range(1, 5):
            frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(frame).save(root / f"v{v}" / f"{i}.png")
    (tmp_path / "val.txt").write_text("v0 4 0\nv1 4 1\nv2 4 2\n")
    (tmp_path / "names.txt").write_text("open door\nclose door\nwave hand\n")
    cfg = tiny_config(
        tmp_path / "w",
        model={"num_classes": None},
        data={
            "format": "frame_list",
            "root": str(root),
            "frame_template": "{}.png",
            "labels_file": str(tmp_path / "names.txt"),
            "val": {"ann_file": str(tmp_path / "val.txt")},
        },
    )
    stored = cfg.to_dict()
    stored["model"]["num_classes"] = 3
    cfg.model.num_classes = 3
    state = build_model(cfg.model).state_dict()
    cfg.model.num_classes = None
    ckpt = tmp_path / "tsn.pt"
    atomic_save({"model": state, "config": stored, "class_names": ["a", "b", "c"]}, ckpt)
    return cfg, ckpt, state


def test_frame_list_labels_file_names_eval_outputs_before_the_stored_names(tmp_path):
    cfg, ckpt, state = _frame_list_checkpoint(tmp_path)
    metrics = evaluate(cfg, ckpt, split="val", out=tmp_path / "out" / "tsn.json")
    rows = read_rows(tmp_path / "out" / "tsn_predictions.csv")
    assert [r["label_name"] for r in rows] == ["open door", "close door", "wave hand"]
    assert [Path(r["path"]).name for r in rows] == ["v0", "v1", "v2"] and metrics["num_videos"] == 3
    # without a labels file in the config, the names stored with the model
    cfg.data.labels_file = None
    evaluate(cfg, ckpt, split="val", out=tmp_path / "out2" / "tsn.json")
    assert [r["label_name"] for r in read_rows(tmp_path / "out2" / "tsn_predictions.csv")] == ["a", "b", "c"]
    # a labels file of another length stops the evaluation with its name; nothing is written
    (tmp_path / "two.txt").write_text("open\nclose\n")
    cfg.data.labels_file = str(tmp_path / "two.txt")
    with pytest.raises(ValueError, match=r"two.txt names 2 classes but model.num_classes=3$"):
        evaluate(cfg, ckpt, split="val", out=tmp_path / "out3" / "tsn.json")
    assert not (tmp_path / "out3").exists()
    # unset model.num_classes and a checkpoint without a config: nothing to rebuild the head from
    atomic_save({"model": state}, tmp_path / "bare.pt")
    with pytest.raises(ConfigError, match=r"model.num_classes is not set and .*bare.pt stores no config"):
        evaluate(cfg, tmp_path / "bare.pt", split="val")


def test_reid_num_classes_and_names_are_the_training_identities(synthetic_reid, tmp_path):
    cfg = reid_config(synthetic_reid, tmp_path, model={"num_classes": None})
    task = build_task(cfg)
    dataset = task.build_train_dataset()
    assert task.cfg.model.num_classes == dataset.num_ids == 16
    names = task.class_names(dataset)
    assert names == [str(pid) for pid in sorted(set(dataset.orig_pids.tolist()))] and len(names) == 16
