"""Action metrics on hand-made cases: ties, top-5 with fewer classes, invalid videos, views, saving."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from video_attn.evaluation.action import ActionEvaluator, mean_class_accuracy, top_k_accuracy


def test_ties_break_towards_lower_class_index():
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.5, 0.5, 0.5]])
    labels = np.array([0, 1, 2, 2])
    top1, top2 = top_k_accuracy(scores, labels, (1, 2))
    assert top1 == 0.25  # only row 0: the tie goes to class 0, so rows 1 and 2 miss
    assert top2 == 0.75  # row 3's label ranks third among three equal scores


def test_top5_boundary_and_fewer_classes_rule():
    scores = np.array([[9, 8, 7, 6, 5, 4, 0.0], [9, 8, 7, 6, 5, 4, 0.0]])
    top1, top5 = top_k_accuracy(scores, np.array([4, 5]), (1, 5))
    assert (top1, top5) == (0.0, 0.5)  # rank 5 hits top-5, rank 6 misses
    # with 3 classes, top-5 is top-3: every label is a hit
    ev = ActionEvaluator(3)
    ev.update(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0]), torch.tensor([0]), torch.tensor([True]))
    m = ev.compute()
    assert m["top1"] == 0.0 and m["top5"] == 100.0


def test_invalid_videos_are_excluded_and_counted():
    ev = ActionEvaluator(2)
    ev.update(
        torch.tensor([[2.0, 1.0], [0.0, 0.0], [float("nan"), 0.0], [0.0, 1.0]]),
        torch.tensor([0, 1, 1, 0]),
        torch.tensor([10, 11, 12, 13]),
        torch.tensor([True, False, False, True]),
    )
    m = ev.compute()
    assert m == {"top1": 50.0, "top5": 100.0, "mean_class_accuracy": 50.0, "num_videos": 2, "num_failed": 2}


def test_nonfinite_valid_scores_raise_naming_the_row():
    ev = ActionEvaluator(2)
    with pytest.raises(ValueError, match=r"dataset rows \[7\]"):
        ev.update(np.array([[np.inf, 0.0]]), [1], [7], [True])
    with pytest.raises(ValueError, match="label 5 outside"):
        ev.update(np.array([[0.0, 0.0]]), [5], [3], [True])


def test_mean_class_accuracy_and_confusion_matrix():
    ev = ActionEvaluator(4)
    scores = np.eye(4)[[0, 1, 1, 2]]  # predictions 0, 1, 1, 2
    ev.update(scores, [0, 0, 1, 1], [0, 1, 2, 3])
    m = ev.compute()
    assert m["top1"] == 50.0
    # class 0: 1/2, class 1: 1/2; classes 2 and 3 have no video and do not count
    assert m["mean_class_accuracy"] == 50.0
    cm = ev.confusion_matrix()
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[1, 2] = 1
    np.testing.assert_array_equal(cm, expected)
    assert mean_class_accuracy(np.array([[3, 1], [0, 1]])) == pytest.approx((0.75 + 1.0) / 2)


def test_duplicates_counted_once_and_multi_view_average_modes():
    views = torch.tensor([[[20.0, 0.0], [0.0, 5.0], [0.0, 5.0]]])  # logits mean -> class 0; probs mean -> 1
    ev_logits, ev_prob = ActionEvaluator(2, "logits"), ActionEvaluator(2, "softmax")
    for ev in (ev_logits, ev_prob):
        ev.update(views, [1], [0])
        ev.update(views, [1], [0])  # the same video again (DistributedSampler padding)
    assert ev_logits.compute()["top1"] == 0.0 and ev_logits.compute()["num_videos"] == 1
    assert ev_prob.compute()["top1"] == 100.0


def test_save_writes_named_predictions_and_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    names = ["jump", "run", "sit", "swim", "walk", "wave"]
    ev = ActionEvaluator(6, class_names=names)
    scores = rng.normal(size=(20, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 20)
    valid = np.ones(20, dtype=bool)
    valid[3] = False
    paths = [f"videos/v{i}.mp4" for i in range(20)]
    ev.update(scores[:10], labels[:10], np.arange(10), valid[:10], paths=paths[:10])
    ev.update(scores[10:], labels[10:], np.arange(10, 20), valid[10:], paths=paths[10:])
    metrics = ev.compute()
    out = ev.save(tmp_path / "out" / "best", topk=3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [  # nothing else (no temp files)
        "best_confusion.npy", "best_confusion.png", "best_predictions.csv", "best_predictions.npz"
    ]
    data = np.load(out["predictions.npz"], allow_pickle=False)
    np.testing.assert_array_equal(data["scores"], scores)
    assert data["paths"].tolist() == paths and data["class_names"].tolist() == names
    rescored = ActionEvaluator(6)
    rescored.update(data["scores"], data["labels"], data["indices"], data["valid"])
    assert rescored.compute() == metrics

    rows = list(csv.DictReader(out["predictions.csv"].open()))
    assert len(rows) == 20 and list(rows[0])[:7] == [
        "index", "path", "valid", "label", "label_name", "pred", "pred_name"
    ]
    assert rows[3]["valid"] == "0" and rows[3]["pred"] == rows[3]["top1_prob"] == ""
    scored = [r for r in rows if r["valid"] == "1"]
    top1 = 100.0 * np.mean([r["pred"] == r["label"] for r in scored])
    assert top1 == pytest.approx(metrics["top1"])
    probs = torch.from_numpy(scores).softmax(dim=1).numpy()
    for r in scored:
        i = int(r["index"])
        best = np.argsort(-scores[i], kind="stable")[:3].tolist()
        assert r["path"] == paths[i] and r["label_name"] == names[labels[i]]
        assert [int(r[f"top{k}"]) for k in (1, 2, 3)] == best and int(r["pred"]) == best[0]
        assert [r[f"top{k}_name"] for k in (1, 2, 3)] == [names[c] for c in best]
        assert r["pred_name"] == names[best[0]]
        assert [float(r[f"top{k}_prob"]) for k in (1, 2, 3)] == pytest.approx(probs[i, best], abs=1e-6)

    cm = np.load(out["confusion.npy"])
    assert cm.sum() == metrics["num_videos"] == 19
    assert 100.0 * np.trace(cm) / cm.sum() == pytest.approx(metrics["top1"])
    assert out["confusion.png"].read_bytes()[:4] == b"\x89PNG"


def test_saved_probabilities_of_softmax_averaging_are_the_averaged_probabilities(tmp_path):
    views = torch.tensor([[[20.0, 0.0], [0.0, 5.0], [0.0, 5.0]]])
    ev = ActionEvaluator(2, "softmax")
    ev.update(views, [1], [0])
    row = next(csv.DictReader(ev.save(tmp_path / "x")["predictions.csv"].open()))
    expected = views.softmax(dim=-1).mean(dim=1)[0]
    # no paths given, default names: the indices
    assert row["path"] == "" and row["label_name"] == "1" and row["pred_name"] == "1"
    assert float(row["top1_prob"]) + float(row["top2_prob"]) == pytest.approx(1.0, abs=1e-5)
    assert float(row["top1_prob"]) == pytest.approx(float(expected[1]), abs=1e-6)
