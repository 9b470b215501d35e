"""``build_reid_dataset(cfg, split)``: the ReID dataset of a config (MARS, DukeMTMC-VideoReID, iLIDS-VID,
PRID2011), split ``train`` | ``query`` | ``gallery``.

Frame sampling: training uses ``data.train.sampler`` with ``model.num_segments`` frames (``consecutive``:
GLTR official, random start, cyclic repeat; ``evenly``: one random frame per chunk; ``random``: sorted random
subset). Query / gallery use ``eval.test_mode``: ``all`` (every frame, one pass: the GLTR official test),
``dense`` (all non-overlapping clips of ``model.num_segments`` frames; the item clip is (V, T, 3, H, W) and
the engine averages the V embeddings), ``evenly`` (``model.num_segments`` evenly spread frames).
Transforms: ``build_clip_transform`` with ``data.train.crop`` / ``data.test.crop`` (``resize`` for ReID).

The returned :class:`TrackletDataset` has the metadata the engine needs: ``pids`` and ``camids`` (np arrays
per item; train pids are the contiguous labels 0..num_ids-1, ``orig_pids`` the dataset's), ``num_ids``,
``paths`` (first frame per tracklet), ``num_frames``. Query / gallery follow ``eval.protocol`` for MARS.
"""

from __future__ import annotations

import logging

import numpy as np

from video_attn.config.schema import Config
from video_attn.data.sampling import (
    ConsecutiveSampler,
    EvenlySampler,
    FrameSampler,
    RandomFramesSampler,
)
from video_attn.data.transforms import build_clip_transform

from .tracklets import AllClipsSampler, TrackletDataset, TrackletIndex

logger = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
TRAIN_SAMPLERS = ("consecutive", "evenly", "random")


def load_reid_index(cfg: Config, split: str) -> TrackletIndex:
    """The tracklets of ``split`` for ``cfg.data.format`` under ``cfg.data.root``."""
    fmt, root = cfg.data.format, cfg.data.root
    if fmt == "mars":
        from .mars import load_mars

        mars = load_mars(root)
        if split == "train":
            return mars.train
        return mars.query() if split == "query" else mars.gallery(cfg.eval.protocol)
    if fmt == "dukev":
        from .dukev import load_dukev_split

        return load_dukev_split(root, split)
    if fmt == "ilidsvid":
        from .ilidsvid import load_ilidsvid_split

        return load_ilidsvid_split(root, split, cfg.data.split_index, cfg.data.train.ann_file)
    if fmt == "prid":
        from .prid import load_prid_split

        return load_prid_split(root, split, cfg.data.split_index, cfg.data.train.ann_file)
    raise ValueError(f"data.format={fmt!r} is not a ReID format; valid: mars, dukev, ilidsvid, prid")


def build_reid_sampler(cfg: Config, train: bool) -> FrameSampler | AllClipsSampler:
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
        from video_attn.data.sampling import AllFramesSampler

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
    if split not in SPLITS:
        raise ValueError(f"ReID split {split!r}; valid: {', '.join(SPLITS)}")
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
