"""The task objects: chosen once from a checked config, evaluation and features read from the batches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from engine_testkit import MeanModel, StandInClips, tiny_config

from video_attn.config.schema import ConfigError
from video_attn.data.build import EpochSeededDataset, build_eval_loader
from video_attn.data.datasets.action_build import ACTION_FORMATS
from video_attn.data.datasets.reid_build import REID_FORMATS
from video_attn.engine.evaluator import gather_by_index
from video_attn.evaluation.reid import evaluate_features, evaluate_rank
from video_attn.evaluation.rerank import re_ranking_features
from video_attn.models import ACTION_ARCHS, REID_ARCHS
from video_attn.tasks import ActionTask, ReidTask, build_task, reid_metrics

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------ choosing the task
def test_task_follows_the_data_format(tmp_path):
    assert type(build_task(tiny_config(tmp_path, data={"format": "video_list"}))) is ActionTask
    reid = tiny_config(tmp_path, task="reid", data={"format": "mars"}, model={"arch": "gltr"})
    task = build_task(reid)
    assert type(task) is ReidTask and task.primary_metric == "mAP" and task.cfg is reid
    assert ActionTask.primary_metric == "top1"
    assert ActionTask.formats == ACTION_FORMATS and ReidTask.formats == REID_FORMATS
    assert ActionTask.archs == ACTION_ARCHS and ReidTask.archs == REID_ARCHS
    assert not set(ACTION_FORMATS) & set(REID_FORMATS)


def test_task_config_errors_name_the_key_and_valid_values(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"data.format='avi' is not a dataset format; valid: action: "
        r"video_list, frame_list, kinetics, sthv2; reid: mars, dukev, ilidsvid, prid",
    ):
        build_task(tiny_config(tmp_path, data={"format": "avi"}))
    wrong = r"task='reid' but data.format='video_list' belongs to task action; set task=action or a reid "
    with pytest.raises(ConfigError, match=wrong):
        build_task(tiny_config(tmp_path, task="reid"))
    with pytest.raises(ConfigError, match=r"task='detection' is not a task; valid: action, reid"):
        build_task(tiny_config(tmp_path, task="detection"))
    with pytest.raises(ConfigError, match=r"model.arch='tanet' is not a reid architecture .*valid: gltr, "):
        build_task(tiny_config(tmp_path, data={"format": "mars"}, model={"arch": "tanet"}))
    with pytest.raises(ValueError, match="a ReID evaluation always ranks the gallery"):
        ReidTask(tiny_config(tmp_path)).eval_splits("val")
    with pytest.raises(ValueError, match="action evaluation split 'query'; valid: val, test"):
        ActionTask(tiny_config(tmp_path)).eval_splits("query")


def test_action_default_eval_split_is_test_when_set(tmp_path):
    assert ActionTask(tiny_config(tmp_path)).eval_splits() == ("val",)
    cfg = tiny_config(tmp_path, data={"test": {"ann_file": "test.txt"}})
    assert ActionTask(cfg).eval_splits() == ("test",)
    assert ActionTask(cfg).validation_splits() == ()  # no data.val.ann_file: no validation
    assert ReidTask(cfg).validation_splits() == ("query", "gallery")


def test_reid_eval_batch_size_is_one_for_whole_tracklets(tmp_path):
    for mode, batch_size in (("all", 1), ("dense", 8), ("evenly", 8)):
        cfg = tiny_config(tmp_path, eval={"test_mode": mode, "batch_size": 8})
        assert ReidTask(cfg).eval_batch_size() == batch_size, mode


# ------------------------------------------------------------------------------------------ evaluation
def test_gather_by_index_drops_duplicates_and_sorts():
    local = {"index": np.array([3, 0, 4, 0]), "x": np.array([[3.0], [0.0], [4.0], [0.0]])}
    out = gather_by_index(local)
    assert out["index"].tolist() == [0, 3, 4] and out["x"][:, 0].tolist() == [0.0, 3.0, 4.0]


def _reid_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)).astype(np.float32)
    q_pids, g_pids = np.array([0, 1, 2, 3]), np.repeat(np.arange(4), 3)
    qf = centers[q_pids] + 0.3 * rng.normal(size=(4, 8)).astype(np.float32)
    gf = centers[g_pids] + 0.3 * rng.normal(size=(12, 8)).astype(np.float32)
    q_valid = np.array([True, True, False, True])
    g_valid = np.ones(12, bool)
    g_valid[5] = False
    q = {"features": qf, "pids": q_pids, "camids": np.zeros(4, np.int64), "valid": q_valid}
    g = {"features": gf, "pids": g_pids, "camids": np.ones(12, np.int64), "valid": g_valid}
    return q, g


def test_reid_metrics_exclude_invalid_tracklets(tmp_path):
    q, g = _reid_arrays()
    cfg = tiny_config(tmp_path, eval={"protocol": "torchreid", "max_rank": 10})
    m = reid_metrics(q, g, cfg.eval)
    qv, gv = q["valid"], g["valid"]
    ref = evaluate_features(
        q["features"][qv],
        g["features"][gv],
        q["pids"][qv],
        g["pids"][gv],
        q["camids"][qv],
        g["camids"][gv],
        protocol="torchreid",
        max_rank=10,
    )
    assert m["mAP"] == pytest.approx(100 * ref["mAP"]) and m["mINP"] == pytest.approx(100 * ref["mINP"])
    assert m["rank1"] == pytest.approx(100 * ref["cmc"][0])
    assert m["rank10"] == pytest.approx(100 * ref["cmc"][9])
    assert (m["num_query"], m["num_gallery"], m["num_failed_query"], m["num_failed_gallery"]) == (3, 11, 1, 1)
    assert np.isnan(m["rank20"])  # max_rank 10 has no rank-20 entry
    assert m["protocol"] == "torchreid" and m["rerank"] is False


def test_reid_metrics_rerank_ranks_the_reranked_distances(tmp_path):
    q, g = _reid_arrays(1)
    ev = {"protocol": "torchreid", "max_rank": 10, "rerank": True, "rerank_k1": 4, "rerank_k2": 2}
    m = reid_metrics(q, g, tiny_config(tmp_path, eval=ev).eval)
    qv, gv = q["valid"], g["valid"]
    dist = re_ranking_features(
        torch.from_numpy(q["features"][qv]), torch.from_numpy(g["features"][gv]), k1=4, k2=2, lambda_value=0.3
    )
    ref = evaluate_rank(dist, q["pids"][qv], g["pids"][gv], q["camids"][qv], g["camids"][gv], max_rank=10)
    assert m["rerank"] is True and m["mAP"] == pytest.approx(100 * ref["mAP"])
    assert m["num_valid_queries"] == ref["num_valid_queries"] == 3


class _MultiView(StandInClips):
    """Items with V = 3 views: clip (3, T, 3, S, S); row 2 "failed to decode"; frame folders know lengths."""

    def __init__(self, n: int) -> None:
        super().__init__(n=n)
        self.records = [SimpleNamespace(num_frames=None if i % 2 else 10 + i) for i in range(n)]

    def load(self, index: int, rng: np.random.Generator) -> dict:
        item = super().load(index, rng)
        item["clip"] = torch.stack([item["clip"] * (v + 1) for v in range(3)])
        item["valid"] = index != 2
        return item


@pytest.mark.parametrize("average", ["logits", "softmax"])
def test_action_evaluation_averages_views_as_written(tmp_path, average):
    cfg = tiny_config(tmp_path, eval={"average": average, "batch_size": 2})
    task, ds = ActionTask(cfg), _MultiView(n=5)
    torch.manual_seed(0)
    model = MeanModel().eval()
    res = task.video_scores(model, build_eval_loader(ds, cfg), CPU)
    with torch.no_grad():
        for i in range(5):
            item = EpochSeededDataset(ds, cfg.seed)[(0, i)]  # what the loader gives (epoch 0)
            logits = model(item["clip"])  # the 3 views as a batch
            expected = logits.mean(0) if average == "logits" else logits.softmax(-1).mean(0)
            torch.testing.assert_close(torch.from_numpy(res["scores"][i]), expected)
    assert res["label"].tolist() == ds.labels and res["valid"].tolist() == [True, True, False, True, True]
    metrics = task.evaluate(model, {"val": build_eval_loader(ds, cfg)}, CPU)
    assert metrics["num_videos"] == 4 and metrics["num_failed"] == 1
    hits = [res["scores"][i].argmax() == ds.labels[i] for i in (0, 1, 3, 4)]
    assert metrics["top1"] == pytest.approx(100 * np.mean(hits))


def test_action_features_are_the_classifier_input_averaged(tmp_path):
    cfg = tiny_config(tmp_path, eval={"batch_size": 2})
    ds = _MultiView(n=5)
    torch.manual_seed(0)
    model = MeanModel().eval()
    arrays = ActionTask(cfg).extract_features(model, build_eval_loader(ds, cfg), CPU)
    assert arrays["features"].shape == (5, 8) and arrays["features"].dtype == np.float32
    with torch.no_grad():
        clip = EpochSeededDataset(ds, cfg.seed)[(0, 3)]["clip"]
        feat = torch.relu(model.bn(model.proj(clip.mean(dim=(1, 3, 4))))).mean(0)
    torch.testing.assert_close(torch.from_numpy(arrays["features"][3]), feat)
    assert arrays["labels"].tolist() == ds.labels and arrays["index"].tolist() == list(range(5))
    assert arrays["paths"].tolist() == [f"video_{i}.mp4" for i in range(5)]
    assert arrays["num_frames"].tolist() == [10, -1, 12, -1, 14]
    assert arrays["valid"].tolist() == [True, True, False, True, True]


class _Tracklets(StandInClips):
    """ReID items: ``pid``, ``camid`` and a first-frame path; ``dense`` gives (2, T, 3, S, S) clips."""

    def __init__(self, n: int, dense: bool) -> None:
        super().__init__(n=n)
        self.dense = dense
        self.num_frames = np.arange(n) + 20

    def load(self, index: int, rng: np.random.Generator) -> dict:
        item = super().load(index, rng)
        if self.dense:
            item["clip"] = torch.stack([item["clip"], 2 * item["clip"]])
        del item["label"]
        return dict(item, pid=100 + index // 2, camid=index % 3, path=f"t{index}/f0.jpg", valid=index != 1)


class _Embed(torch.nn.Module):
    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return clip.mean(dim=(1, 3, 4))  # (N, T, 3, H, W) -> (N, 3)


@pytest.mark.parametrize("dense", [False, True])
def test_reid_features_come_from_the_batches(tmp_path, dense):
    cfg = tiny_config(tmp_path, eval={"test_mode": "dense" if dense else "evenly", "batch_size": 2})
    ds = _Tracklets(n=5, dense=dense)
    arrays = ReidTask(cfg).extract_features(_Embed(), build_eval_loader(ds, cfg, world_size=1), CPU)
    item = EpochSeededDataset(ds, cfg.seed)[(0, 4)]
    expected = item["clip"].reshape(-1, *item["clip"].shape[-4:]).mean(dim=(1, 3, 4)).mean(0)
    torch.testing.assert_close(torch.from_numpy(arrays["features"][4]), expected)
    assert arrays["pids"].tolist() == [100, 100, 101, 101, 102]
    assert arrays["camids"].tolist() == [0, 1, 2, 0, 1]
    assert arrays["paths"].tolist() == [f"t{i}/f0.jpg" for i in range(5)]
    assert arrays["num_frames"].tolist() == [20, 21, 22, 23, 24]
    assert arrays["valid"].tolist() == [True, False, True, True, True]
