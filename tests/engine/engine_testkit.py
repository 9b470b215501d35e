"""Helpers of the engine tests: tiny configs, stand-in datasets, running the tools (in a subprocess or
in-process).

The stand-ins follow the dataset item contract (a dict with ``clip``, ``label``, ``index``, ``valid``,
``num_failed``, ``path``) and draw their "augmentation" from the generator the loader hands to ``load(index,
rng)``, seeded from (seed, epoch, index); the real builders are used by the end-to-end tests through
``tools/make_synthetic.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from video_attn.config.loader import build_section
from video_attn.config.schema import Config

REPO = Path(__file__).resolve().parents[2]


def tiny_config(work_dir: Path, **sections) -> Config:
    """A CPU config with a base-width-8 ResNet-18 TSN at 32 px; ``sections`` deep-update the defaults."""
    tree = {
        "work_dir": str(work_dir),
        "seed": 3,
        "device": "cpu",
        "model": {
            "arch": "tsn",
            "num_classes": 3,
            "num_segments": 2,
            "dropout": 0.5,
            "backbone": {"depth": 18, "base_width": 8},
        },
        "data": {"num_workers": 0, "input_size": [32, 32], "scale_size": 32},
        "train": {
            "epochs": 2,
            "batch_size": 2,
            "lr": 0.05,
            "milestones": [1],
            "clip_grad": None,
            "log_every_iters": 1,
            "fc_lr_mult": 1.0,
            "fc_bias_lr_mult": 1.0,
        },
        "eval": {"batch_size": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            tree.setdefault(key, {})
            _merge(tree[key], value)
        else:
            tree[key] = value
    return build_section(Config, tree)


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


class StandInClips(Dataset):
    """Action items ``{"clip" (T,3,S,S), "label", "index", "valid", "num_failed", "path"}``, random pixels."""

    def __init__(self, n: int = 10, num_classes: int = 3, frames: int = 2, size: int = 32) -> None:
        self.n, self.num_classes, self.frames, self.size = n, num_classes, frames, size
        self.labels = [i % num_classes for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def load(self, index: int, rng: np.random.Generator) -> dict:
        # Pixels depend on the item, the "augmentation" on the item's generator.
        base = np.random.default_rng(index).random((self.frames, 3, self.size, self.size), dtype=np.float32)
        clip = torch.from_numpy(base + np.float32(rng.random()))
        return {
            "clip": clip,
            "label": self.labels[index],
            "index": index,
            "valid": True,
            "num_failed": 0,
            "path": f"video_{index}.mp4",
        }

    def __getitem__(self, index: int) -> dict:
        return self.load(index, np.random.default_rng(0))


class MeanModel(nn.Module):
    """A tiny action model: mean-pooled pixels -> dropout -> linear (``classifier``), with a BN for groups."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 8)
        self.bn = nn.BatchNorm1d(8)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = x.mean(dim=(1, 3, 4))  # (N, 3)
        return self.classifier(self.dropout(torch.relu(self.bn(self.proj(feat)))))


def run_tool(args: list[str], timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python tools/...`` (or torchrun) from the repo root with single-threaded BLAS."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def python_tool(tool: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "tools" / tool), *args]


# The engine tests need data in the real formats, not a learnable task: keep the generated set tiny.
ACTION_GEN_ARGS: list[str] = [
    "--num-classes",
    "3",
    "--train-per-class",
    "3",
    "--val-per-class",
    "3",
    "--min-frames",
    "8",
    "--max-frames",
    "10",
    "--size",
    "32",
]


def action_config(root: Path, work_dir: Path, **sections) -> Config:
    """TANet (R18, base width 8, 4 segments, 32 px) on the synthetic action list files under ``root``."""
    base = {
        "model": {"arch": "tanet", "num_segments": 4},
        "data": {
            "format": "video_list",
            "root": str(root),
            "backend": "pyav",
            "train": {"ann_file": "train.txt", "sampler": "tsn", "crop": "random_multiscale"},
            "val": {"ann_file": "val.txt", "sampler": "tsn", "crop": "center"},
        },
        "train": {"epochs": 2, "batch_size": 2},
        "eval": {"batch_size": 3},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            _merge(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return tiny_config(work_dir, **base)


def reid_config(root: Path, work_dir: Path, **sections) -> Config:
    """GLTR (R18, base width 8, embed 16) on the synthetic MARS-layout set; evenly-sampled test clips."""
    base = {
        "model": {
            "arch": "gltr",
            "num_classes": 16,
            "num_segments": 4,
            "dropout": 0.0,
            "backbone": {"last_stride": 1},
            "temporal_kwargs": {"embed_dim": 16},
        },
        "data": {
            "format": "mars",
            "root": str(root),
            "input_size": [32, 16],
            "train": {"sampler": "consecutive", "crop": "resize"},
        },
        "train": {"epochs": 1, "batch_size": 8, "num_instances": 2, "optimizer": "adam", "lr": 3e-4},
        "eval": {"protocol": "mars_official", "test_mode": "evenly", "batch_size": 16},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            _merge(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return tiny_config(work_dir, **base)


def write_config(cfg: Config, path: Path) -> Path:
    """Dump a resolved config as YAML (what the command-line tools read)."""
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path
