"""Action datasets: every annotation format in its real layout, bad input of every kind, multi-view items,
reproducible per-item randomness, and build_action_dataset from a config."""

from __future__ import annotations

import json
import logging
import os
import shutil

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from video_attn.config.schema import Config
from video_attn.data.build import EpochSeededDataset
from video_attn.data.datasets.action_base import ActionDataset, VideoRecord
from video_attn.data.datasets.action_build import build_action_dataset
from video_attn.data.datasets.frame_list import FrameListDataset
from video_attn.data.datasets.kinetics import KineticsDataset
from video_attn.data.datasets.sthv2 import SthV2Dataset
from video_attn.data.datasets.video_list import VideoListDataset
from video_attn.data.decoders import open_video
from video_attn.data.frame_sampling import SegmentSampler
from video_attn.data.transforms import build_clip_transform


def small_cfg() -> Config:
    cfg = Config()
    cfg.model.num_segments = 4
    cfg.model.num_classes = 3
    data = cfg.data
    data.input_size, data.scale_size = [32, 32], 36
    data.train.crop, data.val.crop, data.test.crop = "random_multiscale", "center", "three"
    return cfg


def transform_for(split: str = "val"):
    data = small_cfg().data
    return build_clip_transform(data, data[split], train=split == "train")


def write_list(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


LIST_LINES = [
    "good.mp4 0",            # 1
    "other.mp4 1",           # 2
    "# a comment",           # 3
    "missing.mp4 0",         # 4  missing file
    "empty.mp4 1",           # 5  empty file
    "good.mp4 9",            # 6  label out of range
    "onlyonefield",          # 7  malformed
    "good.mp4 x",            # 8  malformed label
    "",                      # 9
    "garbage.mp4 1",         # 10 fails at load time
    "truncated.mp4 2",       # 11 damaged tail: decodable with clamping
    "short.mp4 2",           # 12
]


def test_video_list_reports_bad_rows_with_file_and_line(video_dir, tmp_path, caplog):
    ann = write_list(tmp_path / "list.txt", LIST_LINES)
    with caplog.at_level(logging.WARNING):
        ds = VideoListDataset(ann, str(video_dir), SegmentSampler(4, "center"), transform_for(),
                              num_classes=3)
    assert [os.path.basename(r.path) for r in ds.records] == ["good.mp4", "other.mp4", "garbage.mp4",
                                                            "truncated.mp4", "short.mp4"]
    assert ds.labels == [0, 1, 1, 2, 2]
    message = caplog.text
    assert "dropped 5 of 10 rows" in message
    for fragment in ("1 missing files", "1 empty files", "1 labels out of range", "2 malformed lines",
                     "list.txt:4", "list.txt:5", "list.txt:6", "list.txt:7", "list.txt:8"):
        assert fragment in message
    with pytest.raises(ValueError, match=r"list.txt:4"):
        VideoListDataset(ann, str(video_dir), SegmentSampler(4), transform_for(), num_classes=3, strict=True)


def test_empty_or_unreadable_annotation_file(tmp_path, video_dir):
    with pytest.raises(ValueError, match="empty annotation file"):
        VideoListDataset(write_list(tmp_path / "e.txt", [""]), str(video_dir), SegmentSampler(4),
                         transform_for())
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        VideoListDataset(str(tmp_path / "nope.txt"), str(video_dir), SegmentSampler(4), transform_for())


def test_train_replaces_undecodable_videos(video_dir, tmp_path, caplog):
    ann = write_list(tmp_path / "list.txt", LIST_LINES)
    ds = VideoListDataset(ann, str(video_dir), SegmentSampler(4, "random"), transform_for("train"),
                          num_classes=3, replace_failed=True, seed=1)
    with caplog.at_level(logging.WARNING):
        item = ds[2]  # garbage.mp4
    assert "garbage.mp4" in caplog.text
    assert item["valid"] and item["num_failed"] >= 1 and item["index"] != 2
    assert item["label"] == ds.records[item["index"]].label
    assert item["path"] == ds.records[item["index"]].path
    assert item["clip"].shape == (4, 3, 32, 32)
    assert ds.num_failed == item["num_failed"]
    truncated = ds[3]  # damaged tail: decord refuses it, PyAV decodes with clamping
    assert truncated["valid"] and truncated["num_failed"] == 0 and truncated["index"] == 3


def test_eval_flags_undecodable_videos(video_dir, tmp_path):
    ann = write_list(tmp_path / "list.txt", ["good.mp4 0", "garbage.mp4 1", "truncated_moov.mp4 2"])
    sampler = SegmentSampler(4, "uniform", num_clips=2)
    ds = VideoListDataset(ann, str(video_dir), sampler, transform_for("test"), replace_failed=False)
    good, bad, bad2 = ds[0], ds[1], ds[2]
    assert good["valid"] and good["clip"].shape == (6, 4, 3, 36, 36)
    for item, row in ((bad, 1), (bad2, 2)):
        assert not item["valid"] and item["num_failed"] == 1 and item["index"] == row
        assert item["clip"].shape == good["clip"].shape and not item["clip"].any()
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["valid"].tolist() == [True, False, False] and batch["clip"].shape == (3, 6, 4, 3, 36, 36)
    # every batch carries its metadata (the evaluator reads it from there)
    assert batch["index"].tolist() == [0, 1, 2] and batch["label"].tolist() == [0, 1, 2]
    assert batch["num_failed"].tolist() == [0, 1, 1]
    names = ("good.mp4", "garbage.mp4", "truncated_moov.mp4")
    assert batch["path"] == [os.path.join(str(video_dir), name) for name in names]


def test_bounded_retries_then_clear_error(video_dir, tmp_path):
    ann = write_list(tmp_path / "bad.txt", ["garbage.mp4 0", "truncated_moov.mp4 1"])
    ds = VideoListDataset(ann, str(video_dir), SegmentSampler(4), transform_for("train"), max_retries=3)
    with pytest.raises(RuntimeError, match="4 videos in a row failed"):
        ds[0]


def test_multi_view_item_equals_manual_pipeline(video_dir):
    sampler = SegmentSampler(4, "uniform", num_clips=2)
    transform = transform_for("test")
    record = VideoRecord(str(video_dir / "good.mp4"), 1)
    ds = ActionDataset([record], sampler, transform, replace_failed=False)
    item = ds[0]
    with open_video(video_dir / "good.mp4") as reader:
        indices = sampler(len(reader), np.random.default_rng(0))
        # each (3 crops, T, C, H, W)
        views = [transform(reader.get_frames(clip), 1, np.random.default_rng(0))[0] for clip in indices]
    expected = torch.cat(views)  # clip-major: clip 0 crops 0..2, then clip 1
    torch.testing.assert_close(item["clip"], expected, rtol=0, atol=0)


def test_item_randomness_comes_from_the_given_generator(video_dir, tmp_path):
    ann = write_list(tmp_path / "list.txt", ["good.mp4 0", "other.mp4 1", "short.mp4 2"])
    ds = VideoListDataset(ann, str(video_dir), SegmentSampler(4), transform_for("train"), seed=3)
    def clip(i, *seed):
        return ds.load(i, np.random.default_rng(list(seed)))["clip"]

    first = [clip(i, 7, i) for i in range(3)]
    torch.manual_seed(1)  # the global RNGs play no part
    np.random.seed(1)
    for i in range(3):
        torch.testing.assert_close(clip(i, 7, i), first[i], rtol=0, atol=0)
    assert not torch.equal(clip(0, 8, 0), first[0])
    torch.testing.assert_close(ds[1]["clip"], clip(1, 3, 1), rtol=0, atol=0)  # ds[i]: generator (seed, i)
    # through the loader's wrapper: a function of (seed, epoch, index), the same in worker processes
    seeded = EpochSeededDataset(ds, seed=5)
    keys = [(2, 0), (2, 1), (2, 2)]
    in_main = torch.stack([seeded[k]["clip"] for k in keys])
    in_workers = next(iter(DataLoader(seeded, batch_sampler=[keys], num_workers=2)))["clip"]
    torch.testing.assert_close(in_workers, in_main, rtol=0, atol=0)
    assert not torch.equal(seeded[(3, 0)]["clip"], in_main[0])


def test_frame_list_dataset(frame_dir, tmp_path, caplog):
    ann = write_list(tmp_path / "frames.txt", ["a 12 0", "b 6 1", "missing 5 0", "a x 1", "b 0 2", "b 50 2"])
    with caplog.at_level(logging.WARNING):
        ds = FrameListDataset(ann, str(frame_dir), SegmentSampler(4), transform_for("train"), num_classes=3,
                              frame_template="img_{:05d}.png")
    assert len(ds) == 3 and ds.labels == [0, 1, 2]
    assert "frames.txt:3" in caplog.text and "frames.txt:4" in caplog.text and "frames.txt:5" in caplog.text
    for i in range(3):
        item = ds[i]
        assert item["valid"] and item["num_failed"] == 0 and item["clip"].shape == (4, 3, 32, 32)


def kinetics_layout(root, video_dir):
    """Official CSV + videos/<split>/<id>_<start>_<end>.mp4 (one in a class folder, one missing)."""
    (root / "train" / "zumba").mkdir(parents=True)
    (root / "val").mkdir()
    shutil.copy(video_dir / "good.mp4", root / "train" / "abc_000010_000020.mp4")
    shutil.copy(video_dir / "other.mp4", root / "train" / "zumba" / "zzz_000001_000011.mp4")
    shutil.copy(video_dir / "short.mp4", root / "val" / "vvv_000003_000013.mp4")
    (root / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "air drumming,abc,10,20,train\n"
        "zumba,zzz,1,11,train\n"
        "abseiling,gone,0,10,train\n"
        "abseiling,bad,ten,20,train\n"
    )
    (root / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "zumba,vvv,3,13,val\n"
    )


def test_kinetics_csv(video_dir, tmp_path, caplog):
    kinetics_layout(tmp_path, video_dir)
    with caplog.at_level(logging.WARNING):
        ds = KineticsDataset(str(tmp_path / "train.csv"), str(tmp_path), SegmentSampler(4),
                             transform_for("train"), num_classes=3, strict=False)
    assert ds.class_names == ["abseiling", "air drumming", "zumba"]  # sorted names
    assert [(os.path.basename(r.path), r.label) for r in ds.records] == [("abc_000010_000020.mp4", 1),
                                                                         ("zzz_000001_000011.mp4", 2)]
    assert "1 missing videos" in caplog.text and "train.csv:4" in caplog.text
    assert "1 malformed lines" in caplog.text and "train.csv:5" in caplog.text
    assert ds[1]["label"] == 2 and ds[1]["valid"]
    # strict raises for malformed rows but missing videos are never fatal
    with pytest.raises(ValueError, match="malformed"):
        KineticsDataset(str(tmp_path / "train.csv"), str(tmp_path), SegmentSampler(4), transform_for(),
                        strict=True)
    (tmp_path / "ok.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                     "air drumming,abc,10,20,train\nabseiling,gone,0,10,train\n")
    assert len(KineticsDataset(str(tmp_path / "ok.csv"), str(tmp_path), SegmentSampler(4), transform_for(),
                               class_names=ds.class_names, strict=True)) == 1
    (tmp_path / "nohead.csv").write_text("abc,10,20\n")
    with pytest.raises(ValueError, match="nohead.csv:1: header"):
        KineticsDataset(str(tmp_path / "nohead.csv"), str(tmp_path), SegmentSampler(4), transform_for())


def write_webm(path, num_frames=8, seed=0):
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8"}
        for _ in range(num_frames):
            frame = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


SSV2_LABELS = {"Approaching something with your camera": "0", "Pushing something from left to right": "1",
               "Pushing something from right to left": "2"}


def sthv2_layout(root):
    (root / "labels").mkdir(parents=True)
    (root / "videos").mkdir()
    (root / "labels" / "something-something-v2-labels.json").write_text(json.dumps(SSV2_LABELS))
    items = [
        {"id": "101", "label": "pushing a cup from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a cup"]},
        {"id": "102", "label": "approaching a tree with your camera",
         "template": "Approaching [something] with your camera", "placeholders": ["a tree"]},
        {"id": "103", "label": "pushing a pen from right to left",
         "template": "Pushing [something] from right to left", "placeholders": ["a pen"]},  # video missing
        {"id": "104"},  # no template
        {"id": "105", "template": "Spinning [something]", "label": "x", "placeholders": []},  # unknown class
    ]
    (root / "labels" / "something-something-v2-train.json").write_text(json.dumps(items))
    write_webm(root / "videos" / "101.webm", seed=1)
    write_webm(root / "videos" / "102.webm", seed=2)


def test_sthv2_json(tmp_path, caplog):
    sthv2_layout(tmp_path)
    ann = str(tmp_path / "labels" / "something-something-v2-train.json")
    with caplog.at_level(logging.WARNING):
        ds = SthV2Dataset(ann, str(tmp_path / "videos"), SegmentSampler(4), transform_for("train"),
                          num_classes=3)
    assert [(os.path.basename(r.path), r.label) for r in ds.records] == [("101.webm", 1), ("102.webm", 0)]
    for fragment in ("item2", "item3", "item4", "missing files", "unknown templates", "malformed items"):
        assert fragment in caplog.text
    item = ds[0]
    assert item["valid"] and item["clip"].shape == (4, 3, 32, 32)


def test_build_action_dataset_video_list(video_dir, tmp_path):
    shutil.copytree(video_dir, tmp_path / "videos")
    write_list(tmp_path / "train.txt", ["videos/good.mp4 0", "videos/other.mp4 1", "videos/short.mp4 2",
                                        "videos/good.mp4 3"])
    write_list(tmp_path / "val.txt", ["videos/good.mp4 0", "videos/garbage.mp4 1"])
    cfg = small_cfg()
    cfg.data.root = str(tmp_path)
    cfg.data.train.ann_file, cfg.data.val.ann_file = "train.txt", "val.txt"  # found under data.root
    cfg.data.test.ann_file, cfg.data.test.num_clips = "val.txt", 2
    train = build_action_dataset(cfg, "train", num_classes=3)
    assert len(train) == 3 and train.replace_failed  # label 3 >= num_classes dropped
    assert train[0]["clip"].shape == (4, 3, 32, 32)
    val = build_action_dataset(cfg, "val", num_classes=3)
    assert not val.replace_failed and val.sampler.mode == "center"
    assert val[0]["clip"].shape == (4, 3, 32, 32) and not val[1]["valid"]
    test = build_action_dataset(cfg, "test", num_classes=3)
    assert test[0]["clip"].shape == (6, 4, 3, 36, 36)
    cfg.data.strict = True
    with pytest.raises(ValueError, match="train.txt:4"):
        build_action_dataset(cfg, "train", num_classes=3)
    with pytest.raises(ValueError, match="valid: train, val, test"):
        build_action_dataset(cfg, "query", num_classes=3)
    cfg.data.format = "mars"
    with pytest.raises(ValueError, match="not an action format"):
        build_action_dataset(cfg, "train", num_classes=3)
    cfg.data.format = "video_list"
    cfg.data.val.ann_file = None
    with pytest.raises(ValueError, match="data.val.ann_file is not set"):
        build_action_dataset(cfg, "val", num_classes=3)


def test_build_action_dataset_kinetics_and_sthv2(video_dir, tmp_path):
    kinetics_layout(tmp_path / "k400", video_dir)
    cfg = small_cfg()
    cfg.data.format, cfg.data.root = "kinetics", str(tmp_path / "k400")
    cfg.data.train.ann_file, cfg.data.val.ann_file = "train.csv", "val.csv"
    val = build_action_dataset(cfg, "val", num_classes=3)
    # class indices come from the training CSV (val.csv alone has only "zumba")
    assert val.class_names == ["abseiling", "air drumming", "zumba"] and val.labels == [2]
    sthv2_layout(tmp_path / "ssv2")
    cfg.data.format, cfg.data.root = "sthv2", str(tmp_path / "ssv2" / "videos")
    cfg.data.train.ann_file = str(tmp_path / "ssv2" / "labels" / "something-something-v2-train.json")
    cfg.data.flip_label_map = {1: 2}
    train = build_action_dataset(cfg, "train", num_classes=3)
    assert train.labels == [1, 0]
    labels = {train.load(0, np.random.default_rng(epoch))["label"] for epoch in range(12)}
    assert labels == {1, 2}  # the flip swaps 1 <-> 2 about half the time
