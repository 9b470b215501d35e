"""``build_reid_dataset(cfg, split)``: the ReID dataset of a config (MARS, DukeMTMC-VideoReID, iLIDS-VID,
PRID2011), split ``train`` | ``query`` | ``gallery``.

Frame sampling: training uses ``data.train.sampler`` with ``model.num_segments`` frames (``consecutive``:
GLTR official, random start, cyclic repeat; ``evenly``: one random frame per chunk; ``random``: sorted random
subset). Query / gallery use ``eval.test_mode``: ``all`` (every frame, one pass: the GLTR official test),
``dense`` (all non-overlapping clips of ``model.num_segments`` frames; the item clip is (V, T, 3, H, W) and
the ReID task averages the V embeddings), ``evenly`` (``model.num_segments`` evenly spread frames).
Transforms: ``build_clip_transform`` with ``data.train.crop`` / ``data.test.crop`` (``resize`` for ReID).

The returned :class:`TrackletDataset`'s items carry ``pid`` (train: the contiguous labels 0..num_ids-1;
query / gallery: the dataset's ids), ``camid`` and ``path`` (first frame); the dataset knows ``num_ids``
and ``num_frames`` per tracklet. Query / gallery follow ``eval.protocol`` for MARS. The formats are the
names of :data:`REID_DATASETS`; :data:`REID_FORMATS` lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from video_attn.config.schema import Config
from video_attn.data.frame_sampling import (
    AllClipsSampler,
    AllFramesSampler,
    ConsecutiveSampler,
    EvenlySampler,
    FrameSampler,
    RandomFramesSampler,
)
from video_attn.data.transforms import build_clip_transform

from .tracklets import TrackletDataset, TrackletIndex

logger = logging.getLogger(__name__)

REID_SPLITS = ("train", "query", "gallery")
TRAIN_SAMPLERS = ("consecutive", "evenly", "random")


def _mars_index(cfg: Config, split: str) -> TrackletIndex:
    from .mars import load_mars

    mars = load_mars(cfg.data.root)
    if split == "train":
        return mars.train
    return mars.query() if split == "query" else mars.gallery(cfg.eval.protocol)


def _dukev_index(cfg: Config, split: str) -> TrackletIndex:
    from .dukev import load_dukev_split

    return load_dukev_split(cfg.data.root, split)


def _ilidsvid_index(cfg: Config, split: str) -> TrackletIndex:
    from .ilidsvid import load_ilidsvid_split

    return load_ilidsvid_split(cfg.data.root, split, cfg.data.split_index, cfg.data.train.ann_file)


def _prid_index(cfg: Config, split: str) -> TrackletIndex:
    from .prid import load_prid_split

    return load_prid_split(cfg.data.root, split, cfg.data.split_index, cfg.data.train.ann_file)


# data.format -> loader of a split's tracklets (cfg, split) -> TrackletIndex
REID_DATASETS: dict[str, Callable[[Config, str], TrackletIndex]] = {
    "mars": _mars_index,
    "dukev": _dukev_index,
    "ilidsvid": _ilidsvid_index,
    "prid": _prid_index,
}
REID_FORMATS = tuple(REID_DATASETS)


def load_reid_index(cfg: Config, split: str) -> TrackletIndex:
    """The tracklets of ``split`` for ``cfg.data.format`` under ``cfg.data.root``."""
    loader = REID_DATASETS.get(cfg.data.format)
    if loader is None:
        raise ValueError(
            f"data.format={cfg.data.format!r} is not a ReID format; valid: {', '.join(REID_FORMATS)}"
        )
    return loader(cfg, split)


def build_reid_sampler(cfg: Config, train: bool) -> FrameSampler:
    clip_len = cfg.model.num_segments
    if train:
        name = cfg.data.train.sampler
        if name == "consecutive":
            return ConsecutiveSampler(clip_len, mode="random")
        if name == "evenly":
            return EvenlySampler(clip_len, mode="random")
        if name == "random":
            return RandomFramesSampler(clip_len)
        raise ValueError(f"data.train.sampler={name!r} for ReID; valid: {', '.join(TRAIN_SAMPLERS)}")
    mode = cfg.eval.test_mode
    if mode == "all":
        return AllFramesSampler()
    if mode == "dense":
        return AllClipsSampler(clip_len)
    if mode == "evenly":
        return EvenlySampler(clip_len, mode="center")
    raise ValueError(f"eval.test_mode={mode!r}; valid: all, dense, evenly")


def relabel(pids: np.ndarray) -> np.ndarray:
    """Contiguous labels 0..K-1 in increasing pid order."""
    _, labels = np.unique(pids, return_inverse=True)
    return labels.astype(np.int64)


def build_reid_dataset(cfg: Config, split: str) -> TrackletDataset:
    """The ReID dataset of ``split`` (train | query | gallery) of ``cfg`` (see the module docstring)."""
    if split not in REID_SPLITS:
        raise ValueError(f"ReID split {split!r}; valid: {', '.join(REID_SPLITS)}")
    train = split == "train"
    index = load_reid_index(cfg, split)
    if len(index) == 0:
        raise ValueError(f"ReID {split} split of {cfg.data.format} under {cfg.data.root} has no tracklets")
    split_cfg = cfg.data.train if train else cfg.data.test
    transform = build_clip_transform(cfg.data, split_cfg, train)
    labels = relabel(index.pids) if train else index.pids
    ds = TrackletDataset(
        index,
        build_reid_sampler(cfg, train),
        transform,
        labels=labels,
        replace_failed=train,
        input_size=cfg.data.input_size,
    )
    logger.info(
        "ReID %s %s: %d tracklets, %d identities, %d frames", cfg.data.format, split, len(ds), ds.num_ids,
        int(index.num_frames.sum()),
    )
    return ds
