"""iLIDS-VID (Wang et al., "Person Re-Identification by Video Ranking", ECCV 2014) in its released layout::

    <root>/i-LIDS-VID/sequences/cam1/person###/*.png
    <root>/i-LIDS-VID/sequences/cam2/person###/*.png
    <root>/train-test people splits/train_test_splits_ilidsvid.mat   variable ls_set, (10, 300)

300 identities, one tracklet per camera each. Split ``s`` (``data.split_index``, 0..9) follows Wang et al.
and torchreid: ``ls_set[s]`` holds 1-based positions into the sorted cam1 person folders; the FIRST 150 are
the test identities, the rest the training ones. Train = both cameras' tracklets of the training
identities (labels 0..149 in sorted folder order); query = cam1 of the test identities, gallery = cam2.
camids are 1 (cam1) and 2 (cam2). CMC is the reported metric. Frames are ordered by file name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .mars import load_info_mat
from .tracklets import TrackletIndex

SEQ_DIR = "i-LIDS-VID/sequences"
SPLIT_FILE = "train-test people splits/train_test_splits_ilidsvid.mat"
IMAGE_EXT = (".png", ".jpg", ".jpeg")


def _frames(root: Path, rel_dir: str) -> list[str]:
    names = sorted(n for n in os.listdir(root / rel_dir) if n.lower().endswith(IMAGE_EXT))
    if not names:
        raise ValueError(f"no frames in {root / rel_dir}")
    return [f"{rel_dir}/{n}" for n in names]


def load_ilidsvid_split(
    root: str | Path, split: str, split_index: int = 0, split_file: str | None = None
) -> TrackletIndex:
    """``split`` (train | query | gallery) of iLIDS-VID split ``split_index``."""
    root = Path(root)
    cams = [root / SEQ_DIR / c for c in ("cam1", "cam2")]
    for cam in cams:
        if not cam.is_dir():
            raise FileNotFoundError(f"iLIDS-VID folder not found: {cam} (data.root={root})")
    persons = sorted(d for d in os.listdir(cams[0]) if (cams[0] / d).is_dir())
    missing = sorted(set(persons) ^ {d for d in os.listdir(cams[1]) if (cams[1] / d).is_dir()})
    if missing:
        raise ValueError(f"iLIDS-VID: person folders not in both cameras: {missing[:10]}")
    mat_path = root / (split_file or SPLIT_FILE)
    if not mat_path.is_file():
        raise FileNotFoundError(f"iLIDS-VID split file not found: {mat_path}")
    ls_set = load_info_mat(mat_path, "ls_set").astype(np.int64)
    if ls_set.ndim != 2 or ls_set.shape[1] != len(persons) or ls_set.min() < 1 or ls_set.max() > len(persons):
        raise ValueError(
            f"{mat_path}: ls_set of shape {ls_set.shape} does not index the {len(persons)} person folders"
        )
    if not 0 <= split_index < ls_set.shape[0]:
        raise ValueError(f"data.split_index={split_index}; {mat_path} has splits 0..{ls_set.shape[0] - 1}")
    half = ls_set.shape[1] // 2
    test_ids = sorted(int(i) - 1 for i in ls_set[split_index, :half])
    train_ids = sorted(int(i) - 1 for i in ls_set[split_index, half:])
    if split == "train":
        chosen, cam_list = train_ids, (1, 2)
    elif split in ("query", "gallery"):
        chosen, cam_list = test_ids, ((1,) if split == "query" else (2,))
    else:
        raise ValueError(f"iLIDS-VID split {split!r}; valid: train, query, gallery")
    tracklets, pids, camids = [], [], []
    for label, person in enumerate(persons[i] for i in chosen):
        for cam in cam_list:
            tracklets.append(_frames(root, f"{SEQ_DIR}/cam{cam}/{person}"))
            pids.append(label)
            camids.append(cam)
    return TrackletIndex.from_lists(root, tracklets, pids, camids)
