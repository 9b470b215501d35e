"""The synthetic action generator's object masks (``moving_object_masks``, ``video_object_masks``): they
mark exactly the object's pixels of the frames the generator draws, and the frames stay as they were."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from video_attn.data.decoders import open_video
from video_attn.data.synthetic.action import (
    MotionStyle,
    make_action_dataset,
    moving_object_masks,
    render_moving_object,
    video_object_masks,
)

# sha256 of the default frames of labels 0..3 (16 frames, 64 px, rng seeded with the label), as generated
# before the masks existed: the masks must not change a pixel of the quick start's data
DEFAULT_FRAMES_SHA256 = "248b3bbc963a03722aa69e1eb6b02699998efb42e3fc9198f2a234670bc59ad4"


def test_default_frames_are_unchanged() -> None:
    digest = hashlib.sha256()
    for label in range(4):
        digest.update(render_moving_object(np.random.default_rng(label), label, 16, size=64).tobytes())
    assert digest.hexdigest() == DEFAULT_FRAMES_SHA256


@pytest.mark.parametrize("style", [MotionStyle(), MotionStyle(background="uniform", shape="cross"),
                                   MotionStyle(trajectory="straight", shape="disc")])
@pytest.mark.parametrize("label", [0, 3, 6])
def test_masks_mark_exactly_the_object(style: MotionStyle, label: int) -> None:
    frames = render_moving_object(np.random.default_rng([label, 1]), label, 10, size=48, style=style)
    masks = moving_object_masks(np.random.default_rng([label, 1]), label, 10, size=48, style=style)
    assert masks.shape == frames.shape[:3] and masks.dtype == bool
    areas = masks.sum(axis=(1, 2))
    assert areas.min() > 0 and (areas == areas[0]).all()  # one rigid object in every frame
    # a solid object: all its pixels have one colour, and (on these backgrounds) no background pixel has it
    colour = frames[masks][0]
    assert (frames[masks] == colour).all()
    assert not (frames[~masks] == colour).all(-1).any()


def test_video_object_masks_match_the_written_dataset(tmp_path) -> None:
    make_action_dataset(tmp_path, seed=4, train_per_class=1, val_per_class=1, min_frames=6, max_frames=9,
                        size=32)
    for line_no, line in enumerate((tmp_path / "val.txt").read_text().splitlines()):
        name, label = line.split()
        masks = video_object_masks("val", line_no, int(label), seed=4, min_frames=6, max_frames=9, size=32)
        with open_video(tmp_path / name, backend="pyav") as reader:
            decoded = reader.get_frames(np.arange(len(reader))).astype(int)
        assert masks.shape == decoded.shape[:3]
        # H.264 blurs edges a little: the object (bright) and the background (dark) still separate
        inside = decoded[masks].mean(-1)
        outside = decoded[~masks].mean(-1)
        assert np.median(inside) > np.median(outside) + 60
    with pytest.raises(ValueError, match="split"):
        video_object_masks("test", 0, 0)
