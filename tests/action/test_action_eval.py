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


def test_save_writes_rescorable_predictions(tmp_path):
    rng = np.random.default_rng(0)
    ev = ActionEvaluator(6)
    scores = rng.normal(size=(20, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 20)
    valid = np.ones(20, dtype=bool)
    valid[3] = False
    ev.update(scores[:10], labels[:10], np.arange(10), valid[:10])
    ev.update(scores[10:], labels[10:], np.arange(10, 20), valid[10:])
    metrics = ev.compute()
    paths = ev.save(tmp_path / "out")
    data = np.load(paths["predictions"])
    np.testing.assert_array_equal(data["scores"], scores)
    np.testing.assert_array_equal(data["indices"], np.arange(20))
    rescored = ActionEvaluator(6)
    rescored.update(data["scores"], data["labels"], data["indices"], data["valid"])
    assert rescored.compute() == metrics
    assert np.load(paths["confusion_npy"]).sum() == 19
    assert paths["confusion_png"].read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.reader(paths["top5_csv"].open()))
    assert rows[0][:4] == ["index", "label", "valid", "pred1"] and len(rows) == 21
    assert int(rows[1][3]) == int(np.argmax(scores[0]))
    assert not list((tmp_path / "out").glob("*.tmp"))
