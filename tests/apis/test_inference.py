"""The inference API (load_model, predict_video, predict_long_video, embed_tracklet, embed_many) and
tools/demo.py, on the tiny models of conftest.py whose answers are known by construction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from video_attn.apis import (
    WindowPrediction,
    embed_many,
    embed_tracklet,
    extract_features,
    load_model,
    predict_long_video,
    predict_video,
)
from video_attn.data.datasets.reid_build import load_reid_index
from video_attn.data.datasets.tracklets import read_image_frames
from video_attn.data.decoders import DecodeError, PyAVReader
from video_attn.engine.checkpoint import atomic_save, load_checkpoint
from video_attn.retrieval import load_features

TOOLS = Path(__file__).resolve().parents[2] / "tools"
COLOURS = ["red", "green", "blue"]


def decode(path: Path) -> np.ndarray:
    with PyAVReader(str(path)) as reader:
        return reader.get_frames(range(reader.num_frames))


@pytest.fixture(scope="module")
def colour_model(action_assets):
    return load_model(checkpoint=action_assets.checkpoint, device="cpu")


# ------------------------------------------------------------------------------------------ load_model
def test_load_model_rebuilds_the_stored_config_in_eval_mode(colour_model, action_assets):
    assert not colour_model.training
    assert colour_model.class_names == COLOURS
    assert colour_model.cfg.model.num_classes == 3
    assert colour_model.cfg.data.val.num_clips == 2
    stored = load_checkpoint(action_assets.checkpoint)["model"]
    for key, value in colour_model.state_dict().items():
        assert torch.equal(value, stored[key]), key


def test_load_model_with_a_config_file_overrides_and_a_labels_file(action_assets, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("rot\ngruen\nblau\n")
    tree = action_assets.cfg.to_dict()
    tree["data"]["labels_file"] = str(labels)
    config = tmp_path / "colour.yaml"
    config.write_text(yaml.safe_dump(tree))
    bare = tmp_path / "bare.pt"  # a checkpoint without class names, as tools/convert_checkpoint.py writes
    ckpt = load_checkpoint(action_assets.checkpoint)
    atomic_save({"model": ckpt["model"], "config": None}, bare)

    model = load_model(config, bare, device="cpu", overrides=["eval.average=softmax"])
    assert model.cfg.eval.average == "softmax"
    assert model.class_names == ["rot", "gruen", "blau"]
    no_names = load_model(action_assets.cfg, bare, device="cpu", overrides=["data.labels_file=null"])
    assert no_names.class_names == ["0", "1", "2"]
    with pytest.raises(Exception, match="stores no config"):
        load_model(checkpoint=bare)


# ---------------------------------------------------------------------------------------- predict_video
@pytest.mark.parametrize("colour", COLOURS)
def test_predict_video_names_the_known_class(colour_model, action_assets, colour):
    top = predict_video(colour_model, action_assets.videos[colour], topk=2)
    assert len(top) == 2 and top[0][0] == colour
    names, probs = zip(*top)
    assert all(isinstance(n, str) for n in names) and set(names) <= set(COLOURS)
    assert probs[0] >= probs[1] >= 0.0 and sum(probs) <= 1.0 + 1e-6
    everything = predict_video(colour_model, action_assets.videos[colour], topk=10)
    assert len(everything) == 3 and sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)


def test_softmax_view_averaging_keeps_probabilities(action_assets):
    model = load_model(checkpoint=action_assets.checkpoint, device="cpu", overrides=["eval.average=softmax"])
    top = predict_video(model, action_assets.videos["green"], topk=3)
    assert top[0][0] == "green"
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_array_and_frame_folder_inputs_match_the_file(colour_model, action_assets, tmp_path):
    path = action_assets.videos["blue"]
    frames = decode(path)
    folder = tmp_path / "blue_frames"
    folder.mkdir()
    for i, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(folder / f"img_{i:05d}.png")  # lossless: the same pixels as the array
    from_file = predict_video(colour_model, path, topk=3)
    from_array = predict_video(colour_model, frames, topk=3)
    png_model = load_model(
        checkpoint=action_assets.checkpoint, device="cpu", overrides=["data.frame_template=img_{:05d}.png"]
    )
    from_folder = predict_video(png_model, folder, topk=3)
    for other in (from_array, from_folder):
        assert [n for n, _ in other] == [n for n, _ in from_file]
        np.testing.assert_allclose([p for _, p in other], [p for _, p in from_file], rtol=1e-5, atol=1e-6)


def test_predict_video_errors_name_the_input(colour_model, tmp_path):
    with pytest.raises(DecodeError, match="missing.mp4"):
        predict_video(colour_model, tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError, match="broken.mp4"):
        predict_video(colour_model, broken)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        predict_video(colour_model, np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="topk"):
        predict_video(colour_model, np.zeros((4, 32, 32, 3), np.uint8), topk=0)


# ------------------------------------------------------------------------------------ predict_long_video
def test_predict_long_video_reports_the_change_in_time(colour_model, action_assets, monkeypatch):
    decoded_per_call = []
    get_frames = PyAVReader.get_frames

    def spy(self, indices):
        decoded_per_call.append(len(np.unique(indices)))
        return get_frames(self, indices)

    monkeypatch.setattr(PyAVReader, "get_frames", spy)
    window, stride, change = 1.0, 0.5, action_assets.change_at
    timeline = predict_long_video(colour_model, action_assets.long_video, window, stride, 2, batch_size=2)

    assert all(isinstance(w, WindowPrediction) for w in timeline)
    assert timeline[0].start == 0.0 and timeline[-1].end == pytest.approx(2 * change)
    assert [w.start for w in timeline] == pytest.approx(np.arange(0, 2 * change - window + 1e-9, stride))
    assert all(w.end - w.start == pytest.approx(window) for w in timeline)
    for w in timeline:
        assert len(w.topk) == 2 and sum(p for _, p in w.topk) <= 1.0 + 1e-6
        if w.end <= change:
            assert w.topk[0][0] == "red", w
        if w.start >= change:
            assert w.topk[0][0] == "blue", w
    first_blue = next(w for w in timeline if w.topk[0][0] == "blue")
    assert abs(first_blue.start - (change - window / 2)) <= stride  # the window centred on the change
    assert all(w.topk[0][0] == "blue" for w in timeline if w.start >= first_blue.start)
    # decoded in batches of windows: 2 windows x 2 views x 4 frames at most, never the 32-frame video
    assert decoded_per_call and max(decoded_per_call) <= 2 * 2 * 4


def test_predict_long_video_walks_a_decord_configured_file_with_pyav(action_assets, monkeypatch):
    # decord decodes ahead on its own thread between reads (CPU taken from the model): the walk uses PyAV,
    # a single video still uses the configured backend, and the timeline is the one PyAV gives
    import video_attn.apis.inference as inference

    backends = []
    opener = inference.open_video
    monkeypatch.setattr(
        inference, "open_video", lambda *a, **kw: backends.append(kw["backend"]) or opener(*a, **kw)
    )
    model = load_model(checkpoint=action_assets.checkpoint, device="cpu", overrides=["data.backend=decord"])
    timeline = predict_long_video(model, action_assets.long_video, window=1.0, stride=1.0)
    assert backends == ["pyav"]
    predict_video(model, action_assets.long_video)
    assert backends == ["pyav", "decord"]
    pyav_model = load_model(checkpoint=action_assets.checkpoint, device="cpu")
    assert timeline == predict_long_video(pyav_model, action_assets.long_video, window=1.0, stride=1.0)


def test_predict_long_video_of_an_array_needs_a_frame_rate(colour_model, action_assets):
    frames = decode(action_assets.long_video)
    with pytest.raises(ValueError, match="frame rate"):
        predict_long_video(colour_model, frames, window=1.0, stride=1.0)
    timeline = predict_long_video(colour_model, frames, window=2.0, stride=2.0, fps=8)
    assert [(w.start, w.end, w.topk[0][0]) for w in timeline] == [(0.0, 2.0, "red"), (2.0, 4.0, "blue")]
    with pytest.raises(ValueError, match="window"):
        predict_long_video(colour_model, frames, window=0.0, fps=8)


# ----------------------------------------------------------------------------------------------- demo
def test_demo_prints_the_topk_and_writes_json(action_assets, tmp_path, capsys, load_tool):
    demo = load_tool("demo")
    out = tmp_path / "pred.json"
    video = str(action_assets.videos["red"])
    rc = demo.main([video, "--checkpoint", str(action_assets.checkpoint), "--topk", "2", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    line = stdout.strip()
    assert line.startswith(f"{video}: red ") and line.count(",") == 1
    result = json.loads(out.read_text())
    (entry,) = result["videos"]
    assert entry["path"] == video
    assert [p["class"] for p in entry["predictions"]][0] == "red"
    assert f"{float(line.split()[2].rstrip(',')):.3f}" == f"{entry['predictions'][0]['probability']:.3f}"


def test_demo_folder_gives_one_line_per_video(action_assets, tmp_path, capsys, load_tool):
    demo = load_tool("demo")
    config = tmp_path / "colour.yaml"  # a config file and an override instead of the stored config
    config.write_text(yaml.safe_dump(action_assets.cfg.to_dict()))
    folder = action_assets.root / "videos"
    ckpt = str(action_assets.checkpoint)
    rc = demo.main([str(config), str(folder), "--checkpoint", ckpt, "eval.average=softmax"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert sorted(lines) == lines and len(lines) == 3
    for line, colour in zip(lines, sorted(COLOURS)):
        assert line.startswith(f"{folder / colour}.mp4: {colour} ")


def test_demo_long_video_timeline_and_annotated_video(
    action_assets, tmp_path, monkeypatch, capsys, load_tool
):
    demo = load_tool("demo")
    monkeypatch.chdir(tmp_path)
    out_video = tmp_path / "annotated.mp4"
    args = [
        str(action_assets.long_video),
        "--checkpoint",
        str(action_assets.checkpoint),
        "--window",
        "2",
        "--topk",
        "1",
        "--out-video",
        str(out_video),
    ]
    assert demo.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"{action_assets.long_video}:"
    assert [ln.split() for ln in lines[1:]] == [
        ["0.00-2.00", "s", "red", lines[1].split()[-1]],
        ["2.00-4.00", "s", "blue", lines[2].split()[-1]],
    ]
    saved = json.loads((tmp_path / "long_timeline.json").read_text())  # the default timeline file
    (entry,) = saved["videos"]
    starts_and_top1 = [(w["start"], w["predictions"][0]["class"]) for w in entry["timeline"]]
    assert starts_and_top1 == [(0.0, "red"), (2.0, "blue")]

    source, annotated = decode(action_assets.long_video), decode(out_video)
    assert annotated.shape == source.shape
    with PyAVReader(str(out_video)) as reader:
        assert reader.fps == pytest.approx(8.0)
    # the label is drawn in a box over the top rows (one line of 10 px text); below, the frames are the video
    diff = np.abs(annotated.astype(int) - source)
    assert diff[:, :12].mean() > 20 and diff[:, 16:].mean() < 8


def test_demo_bad_input_is_one_line_and_status_1(action_assets, tmp_path, capsys, load_tool):
    demo = load_tool("demo")
    ckpt = str(action_assets.checkpoint)
    assert demo.main([str(tmp_path / "missing.mp4"), "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and "missing.mp4" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    assert demo.main([str(broken), "--checkpoint", ckpt]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "broken.mp4" in err
    assert demo.main([str(broken), "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
    # a folder with a broken video: the others are still predicted, the status says something failed
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(action_assets.videos["green"], folder / "green.mp4")
    shutil.copy(broken, folder / "zz_broken.mp4")
    assert demo.main([str(folder), "--checkpoint", ckpt]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{folder / 'green.mp4'}: green ")
    assert "zz_broken.mp4" in captured.err


# ----------------------------------------------------------------------------------------------- ReID
@pytest.mark.parametrize("test_mode", ["evenly", "dense"])
def test_embed_tracklet_is_the_normalised_extracted_feature(reid_assets, tmp_path, test_mode):
    override = [f"eval.test_mode={test_mode}", "eval.batch_size=1"]
    model = load_model(checkpoint=reid_assets.checkpoint, device="cpu", overrides=override)
    cfg = model.cfg
    arrays = extract_features(cfg, reid_assets.checkpoint, "query", out=None)
    index = load_reid_index(cfg, "query")
    for row in (0, len(index) - 1):
        frames = index.frames(row)
        expected = arrays["features"][list(arrays["index"]).index(row)]
        expected = expected / np.linalg.norm(expected)
        embedding = embed_tracklet(model, frames)
        assert embedding.shape == expected.shape and embedding.dtype == np.float32
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(embedding, expected, atol=1e-5)
        np.testing.assert_allclose(embed_tracklet(model, read_image_frames(frames)), expected, atol=1e-5)
        folder = tmp_path / f"{test_mode}_{row}"
        folder.mkdir()
        for path in frames:
            shutil.copy(path, folder / path.name)
        np.testing.assert_allclose(embed_tracklet(model, folder), expected, atol=1e-5)


def test_embed_many_writes_a_file_tools_retrieve_reads(reid_assets, tmp_path, load_tool):
    model = load_model(checkpoint=reid_assets.checkpoint, device="cpu")
    index = load_reid_index(model.cfg, "query")
    tracklets = [index.frames(i) for i in range(len(index))]
    out = tmp_path / "query.npz"
    arrays = embed_many(model, tracklets, out, pids=index.pids, camids=index.camids)
    features = load_features(out)
    assert features.features.shape == (len(index), arrays["features"].shape[1])
    np.testing.assert_array_equal(features.pids, index.pids)
    assert list(features.paths) == [str(t[0]) for t in tracklets]
    np.testing.assert_array_equal(features.num_frames, index.num_frames)
    normalised = features.features / np.linalg.norm(features.features, axis=1, keepdims=True)
    np.testing.assert_allclose(normalised[1], embed_tracklet(model, tracklets[1]), atol=1e-5)

    retrieve = load_tool("retrieve")
    ranked = tmp_path / "ranked.json"
    args = ["query", str(out), str(out), "--topk", "2", "--backend", "exact", "--out", str(ranked)]
    assert retrieve.main(args) == 0
    lists = json.loads(ranked.read_text())["ranked_lists"]
    assert len(lists) == len(index)
    assert all(r["gallery"][0] == r["query"] for r in lists)  # queried against itself: each finds itself


def test_task_mismatch_is_a_clear_error(colour_model, reid_assets):
    reid_model = load_model(checkpoint=reid_assets.checkpoint, device="cpu")
    with pytest.raises(ValueError, match="predict_video needs an action model.*embed_tracklet"):
        predict_video(reid_model, np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="embed_tracklet needs a ReID model"):
        embed_tracklet(colour_model, np.zeros((4, 32, 16, 3), np.uint8))
    with pytest.raises(TypeError, match="load_model"):
        predict_video(torch.nn.Linear(2, 2), np.zeros((4, 32, 32, 3), np.uint8))
