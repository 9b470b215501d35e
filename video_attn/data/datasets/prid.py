"""PRID2011 (Hirzer et al., SCIA 2011), multi-shot, in its released layout::

    <root>/prid_2011/multi_shot/cam_a/person_####/*.png
    <root>/prid_2011/multi_shot/cam_b/person_####/*.png
    <root>/splits_prid2011.json      [{"train": [person dirs], "test": [person dirs]}, ...] (torchreid's file)

The released dataset has no split file; video ReID papers use torchreid's ``splits_prid2011.json`` (10 random
halves of the identities seen by both cameras). Split ``data.split_index``: train = both cameras of the
``train`` persons (labels 0.. in list order), query = cam_a of the ``test`` persons, gallery = cam_b.
camids are 1 (cam_a) and 2 (cam_b). CMC is the reported metric. Frames are ordered by file name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .tracklets import TrackletIndex

SEQ_DIR = "prid_2011/multi_shot"
SPLIT_FILE = "splits_prid2011.json"
IMAGE_EXT = (".png", ".jpg", ".jpeg")


def _frames(root: Path, rel_dir: str) -> list[str]:
    path = root / rel_dir
    if not path.is_dir():
        raise FileNotFoundError(f"PRID2011 tracklet folder not found: {path}")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXT))
    if not names:
        raise ValueError(f"no frames in {path}")
    return [f"{rel_dir}/{n}" for n in names]


def load_prid_split(
    root: str | Path, split: str, split_index: int = 0, split_file: str | None = None
) -> TrackletIndex:
    """``split`` (train | query | gallery) of PRID2011 split ``split_index``."""
    root = Path(root)
    path = root / (split_file or SPLIT_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"PRID2011 split file not found: {path} (torchreid's splits_prid2011.json)")
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(splits, list) or not splits:
        raise ValueError(f"{path}: expected a list of {{'train': [...], 'test': [...]}} splits")
    if not 0 <= split_index < len(splits):
        raise ValueError(f"data.split_index={split_index}; {path} has splits 0..{len(splits) - 1}")
    entry = splits[split_index]
    if not isinstance(entry, dict) or "train" not in entry or "test" not in entry:
        raise ValueError(f"{path}: split {split_index} needs 'train' and 'test' lists")
    if split == "train":
        dirs, cams = entry["train"], ("a", "b")
    elif split in ("query", "gallery"):
        dirs, cams = entry["test"], (("a",) if split == "query" else ("b",))
    else:
        raise ValueError(f"PRID2011 split {split!r}; valid: train, query, gallery")
    tracklets, pids, camids = [], [], []
    for label, person in enumerate(dirs):
        for cam in cams:
            tracklets.append(_frames(root, f"{SEQ_DIR}/cam_{cam}/{person}"))
            pids.append(label)
            camids.append(1 if cam == "a" else 2)
    return TrackletIndex.from_lists(root, tracklets, pids, camids)
