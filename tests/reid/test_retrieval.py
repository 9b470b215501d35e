"""Retrieval: feature files, exact / faiss index, ranked lists, pictures and the tools/retrieve.py CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from video_attn.evaluation.reid import evaluate_features, pairwise_distance
from video_attn.retrieval import (
    GOOD,
    JUNK,
    WRONG,
    FeatureFileError,
    FeatureSet,
    RetrievalIndex,
    faiss_available,
    ivf_nlist,
    load_features,
    match_labels,
    render_ranked_list,
    save_features,
    save_ranked_lists,
    search_ranked_lists,
)
from video_attn.retrieval.visualize import BORDER_COLORS

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed (optional extra)")
ROOT = Path(__file__).resolve().parents[2]


def load_cli():
    spec = importlib.util.spec_from_file_location("retrieve_cli", ROOT / "tools" / "retrieve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_set(rng, n, dim=8, num_ids=6, with_paths=None, quantized=False):
    pids = rng.integers(0, num_ids, n)
    centers = rng.standard_normal((num_ids, dim))
    feats = centers[pids] + 0.5 * rng.standard_normal((n, dim))
    if quantized:
        feats = np.round(feats)
    paths = None if with_paths is None else np.array([str(p) for p in with_paths])
    return FeatureSet(feats.astype(np.float32), pids, rng.integers(0, 3, n), paths)


def stable_topk(queries: FeatureSet, gallery: FeatureSet, k: int, metric="euclidean"):
    q, g = torch.from_numpy(queries.features), torch.from_numpy(gallery.features)
    dist = pairwise_distance(q, g, metric, normalize=True).numpy()
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order


# ------------------------------------------------------------------------------------------ feature files
def test_feature_file_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    fs = make_set(rng, 5, with_paths=[f"bbox_test/0001/0001C1T0001F{i:03d}.jpg" for i in range(5)])
    fs.num_frames = np.arange(5, dtype=np.int64) + 3
    save_features(tmp_path / "f.npz", fs)
    back = load_features(tmp_path / "f.npz")
    np.testing.assert_array_equal(back.features, fs.features)
    np.testing.assert_array_equal(back.pids, fs.pids)
    assert back.paths.dtype.kind == "U" and back.paths[2] == fs.paths[2]
    np.testing.assert_array_equal(back.num_frames, fs.num_frames)
    # action files carry labels instead of pids
    np.savez(tmp_path / "action.npz", features=np.zeros((2, 3), np.float32), labels=np.array([4, 5]))
    assert load_features(tmp_path / "action.npz").pids.tolist() == [4, 5]
    np.savez(tmp_path / "nofeat.npz", pids=np.array([1]))
    with pytest.raises(FeatureFileError, match="nofeat.npz: missing array 'features'"):
        load_features(tmp_path / "nofeat.npz")
    np.savez(tmp_path / "badpids.npz", features=np.zeros((2, 3), np.float32), pids=np.array([1, 2, 3]))
    with pytest.raises(FeatureFileError, match="badpids.npz: pids must be 2 integers"):
        load_features(tmp_path / "badpids.npz")
    np.savez(
        tmp_path / "pickled.npz",
        features=np.zeros((1, 3), np.float32),
        paths=np.array(["a", 1], dtype=object),
    )
    with pytest.raises(FeatureFileError, match="pickled.npz"):
        load_features(tmp_path / "pickled.npz")
    with pytest.raises(FeatureFileError, match="no such feature file"):
        load_features(tmp_path / "missing.npz")


def test_only_valid_drops_failed_items():
    fs = FeatureSet(
        np.zeros((3, 2), np.float32), valid=np.array([True, False, True]), pids=np.array([1, 2, 3])
    )
    assert fs.only_valid().pids.tolist() == [1, 3]


# -------------------------------------------------------------------------------------------------- index
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_index_equals_stable_argsort_with_ties(metric):
    rng = np.random.default_rng(1)
    gallery, queries = make_set(rng, 300, quantized=True), make_set(rng, 20, quantized=True)
    index = RetrievalIndex(gallery, metric=metric, backend="exact")
    dist, idx = index.search(queries.features, 15)
    ref_d, ref_i = stable_topk(queries, gallery, 15, metric)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(dist, ref_d)
    # k beyond the gallery size is clipped
    assert index.search(queries.features[:2], 1000)[1].shape == (2, 300)


@needs_faiss
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_flat_and_ivf_match_exact(metric, tmp_path):
    rng = np.random.default_rng(2)
    gallery, queries = make_set(rng, 2000, dim=16, num_ids=40), make_set(rng, 30, dim=16, num_ids=40)
    exact_d, exact_i = RetrievalIndex(gallery, metric=metric, backend="exact").search(queries.features, 10)
    flat = RetrievalIndex(gallery, metric=metric, backend="faiss")
    assert flat.index_type == "flat"
    flat_d, flat_i = flat.search(queries.features, 10)
    np.testing.assert_array_equal(flat_i, exact_i)
    np.testing.assert_allclose(flat_d, exact_d, atol=1e-5)
    # IVF searching every list is exhaustive, hence exact
    ivf = RetrievalIndex(gallery, metric=metric, backend="faiss", index_type="ivf", nlist=8, nprobe=8)
    np.testing.assert_array_equal(ivf.search(queries.features, 10)[1], exact_i)
    ivf.save(tmp_path / "ivf")
    loaded = RetrievalIndex.load(tmp_path / "ivf")
    assert (loaded.index_type, loaded.nlist, loaded.nprobe) == ("ivf", 8, 8)
    np.testing.assert_array_equal(loaded.search(queries.features, 10)[1], exact_i)
    assert loaded.gallery.pids.tolist() == gallery.pids.tolist()


def test_ivf_nlist_rule():
    assert ivf_nlist(82_161) == 1024  # 4 sqrt(N) = 1146 -> 1024 lists, 80 points each
    assert ivf_nlist(1_000_000) == 4096
    assert ivf_nlist(1000) == 16  # lowered until each list has >= 39 training points
    assert ivf_nlist(10) == 1


def test_exact_index_save_load(tmp_path):
    rng = np.random.default_rng(3)
    gallery, queries = make_set(rng, 50), make_set(rng, 4)
    index = RetrievalIndex(gallery, backend="exact", metric="cosine")
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert (meta["backend"], meta["metric"], meta["size"]) == ("exact", "cosine", 50)
    loaded = RetrievalIndex.load(tmp_path / "idx")
    np.testing.assert_array_equal(loaded.search(queries.features, 5)[1], index.search(queries.features, 5)[1])
    with pytest.raises(FileNotFoundError, match="not a retrieval index"):
        RetrievalIndex.load(tmp_path)


def test_index_rejects_bad_input():
    rng = np.random.default_rng(4)
    index = RetrievalIndex(make_set(rng, 10), backend="exact")
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        index.search(np.zeros((2, 5), np.float32), 3)
    bad = np.zeros((2, 8), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        index.search(bad, 3)
    with pytest.raises(ValueError, match="valid choices"):
        RetrievalIndex(make_set(rng, 10), metric="l1")


# ---------------------------------------------------------------------------------------------- ranked lists
def test_match_labels():
    labels = match_labels(5, 1, np.array([5, 5, 3, -1, 5]), np.array([1, 2, 1, 2, 3]))
    assert labels.tolist() == [JUNK, GOOD, WRONG, JUNK, GOOD]
    assert match_labels(5, 1, np.array([-1]), np.array([2]), junk_pid_minus_one=False).tolist() == [WRONG]
    assert match_labels(5, None, np.array([5, 4]), None).tolist() == [GOOD, WRONG]


def test_ranked_lists_mark_and_exclude_junk():
    # 1-d features: gallery order by distance is the row order
    g = FeatureSet(
        np.arange(6, dtype=np.float32)[:, None] + 1,
        np.array([1, 1, 2, -1, 1, 3]),
        np.array([0, 1, 0, 0, 2, 0]),
    )
    q = FeatureSet(np.array([[0.9]], np.float32), np.array([1]), np.array([0]))
    index = RetrievalIndex(g, backend="exact", normalize=False)
    (kept,) = search_ranked_lists(index, q, 4)
    assert kept.indices.tolist() == [0, 1, 2, 3]
    assert kept.labels.tolist() == [JUNK, GOOD, WRONG, JUNK]
    (clean,) = search_ranked_lists(index, q, 4, exclude_junk=True)
    assert clean.indices.tolist() == [1, 2, 4, 5]
    assert clean.labels.tolist() == [GOOD, WRONG, GOOD, WRONG]


# -------------------------------------------------------------------------------------------------- pictures
def write_image(path: Path, color) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 40), color).save(path)
    return str(path)


def test_render_ranked_list_borders_and_placeholder(tmp_path):
    q = write_image(tmp_path / "q.png", (10, 10, 10))
    g = [write_image(tmp_path / f"g{i}.png", (200, 200, 0)) for i in range(2)] + [str(tmp_path / "gone.jpg")]
    img = render_ranked_list(q, g, [GOOD, WRONG, JUNK], [0.1, 0.2, 0.3], thumb_size=(16, 32), border=3)
    tile_w, gap = 16 + 6, (16 + 6) // 3
    assert img.size == (tile_w * 4 + gap, 32 + 6 + 14)
    for i, mark in enumerate([GOOD, WRONG, JUNK]):
        x0 = tile_w * (i + 1) + gap
        assert img.getpixel((x0 + 1, 1)) == BORDER_COLORS[mark]  # border
    assert img.getpixel((tile_w + gap + 8, 16))[0] > 150  # a real thumbnail inside
    assert img.getpixel((tile_w * 3 + gap + 8, 16)) == (40, 40, 40)  # missing file: placeholder


def test_video_thumbnail_is_middle_frame(tmp_path):
    import av
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(8):
            frame = np.full((32, 32, 3), 255 if i == 4 else 0, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    from video_attn.retrieval import load_thumbnail

    thumb = load_thumbnail(str(path), (16, 16))
    assert thumb is not None and np.asarray(thumb).mean() > 200  # frame 4 of 8 is the white one


def test_save_ranked_lists_writes_one_strip_per_query(tmp_path):
    rng = np.random.default_rng(5)
    paths = [write_image(tmp_path / "img" / f"{i}.png", (i * 20, 0, 0)) for i in range(12)]
    gallery = make_set(rng, 12, with_paths=paths)
    queries = make_set(rng, 3, with_paths=paths[:3])
    ranked = search_ranked_lists(RetrievalIndex(gallery, backend="exact"), queries, 5)
    files = save_ranked_lists(ranked, queries, gallery, tmp_path / "vis", num_vis=2)
    assert [Path(f).name for f in files] == ["query_000000.jpg", "query_000001.jpg"]
    assert Image.open(files[0]).size[1] == 128 + 8 + 14


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_build_query_visualise_evaluate(tmp_path, capsys):
    cli = load_cli()
    rng = np.random.default_rng(6)
    img = write_image(tmp_path / "img" / "a.png", (0, 0, 255))
    gallery = make_set(rng, 40, num_ids=5, with_paths=["img/a.png"] * 40)
    queries = make_set(rng, 6, num_ids=5, with_paths=["img/a.png"] * 6)
    save_features(tmp_path / "g.npz", gallery)
    save_features(tmp_path / "q.npz", queries)
    assert (
        cli.main(["build", str(tmp_path / "g.npz"), "--out", str(tmp_path / "index"), "--backend", "exact"])
        == 0
    )
    assert "indexed 40 items" in capsys.readouterr().out
    argv = [
        "query",
        str(tmp_path / "index"),
        str(tmp_path / "q.npz"),
        "--topk",
        "3",
        "--vis-dir",
        str(tmp_path / "vis"),
        "--num-vis",
        "2",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("query ") == 6 and "2 ranked-list pictures" in out
    lists = json.loads((tmp_path / "r.json").read_text())["ranked_lists"]
    assert len(lists) == 6 and len(lists[0]["gallery"]) == 3
    assert Path(img).exists() and len(list((tmp_path / "vis").glob("*.jpg"))) == 2
    # query straight against a gallery file, with evaluation
    assert (
        cli.main(
            [
                "query",
                str(tmp_path / "g.npz"),
                str(tmp_path / "q.npz"),
                "--evaluate",
                "--backend",
                "exact",
                "--num-print",
                "0",
            ]
        )
        == 0
    )
    expected = evaluate_features(
        queries.features, gallery.features, queries.pids, gallery.pids, queries.camids, gallery.camids
    )
    assert f"mAP {100 * expected['mAP']:.2f}" in capsys.readouterr().out
    # bad input: one-line reason, non-zero exit
    assert cli.main(["query", str(tmp_path / "index"), str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz: no such feature file" in capsys.readouterr().err
