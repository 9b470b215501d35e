"""The typed schema of every config: one dataclass per section, each field a key with its type and default.

Adding a key means adding a field here (with a comment saying what reads it). Keys that hold the name of a
registered module (an attention name, a dataset format) are plain strings checked by the builder that reads
them, which lists the valid names in its error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class Section:
    """Base of all schema sections: attribute access plus item access with dotted keys."""

    def __getitem__(self, key: str) -> Any:
        node: Any = self
        for part in key.split("."):
            if not isinstance(node, Section) or part not in {f.name for f in dataclasses.fields(node)}:
                raise KeyError(key)
            node = getattr(node, part)
        return node

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def to_dict(self) -> dict:
        """Plain nested dict of builtins (safe for YAML, JSON and ``torch.load(weights_only=True)``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def validate(self, prefix: str) -> None:
        """Cross-field checks; raise ``ConfigError`` naming the key. Sections override as needed."""


# --------------------------------------------------------------------------------------------- model
@dataclass
class BackboneConfig(Section):
    """ResNet with pluggable attention (video_attn.models.backbones.resnet)."""

    depth: Literal[18, 34, 50, 101] = 50
    # stem width; 64 is torchvision. Small values (e.g. 16) give tiny CPU models for tests and demos.
    base_width: int = 64
    # local path to a torchvision-layout state_dict (never downloaded)
    pretrained: str | None = None
    last_stride: Literal[1, 2] = 2
    # gate after the last BN of each residual branch: one name for all stages or one per stage (4 names)
    attention: str | list[str] = "none"
    attention_kwargs: dict[str, Any] = field(default_factory=dict)
    # replacement of the 3x3 conv of each block (sk, splat, condconv, dynamic, gsa), one name or one per stage
    conv: str | list[str] = "none"
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    # block-level variant of the residual connection: standard add, or highway gating
    residual: Literal["standard", "highway"] = "standard"
    # options of the residual module (e.g. highway gate bias); 4-entry lists are per stage
    residual_kwargs: dict[str, Any] = field(default_factory=dict)
    # module after each stage (residual_attention): one name for all stages or one per stage (4 names)
    stage_module: str | list[str] = "none"
    # options of the stage module; 4-entry lists are per stage
    stage_module_kwargs: dict[str, Any] = field(default_factory=dict)
    frozen_bn: bool = False
    grad_checkpointing: bool = False


@dataclass
class ModelConfig(Section):
    # the model and the temporal module it carries: action tsn | tsm (TemporalShift) | tanet (TAM); ReID
    # gltr (GLTR) | temporal_pool | temporal_attention | gru (the Gao & Nevatia baselines). The valid names
    # are the model registries' (video_attn.models.ACTION_ARCHS / REID_ARCHS), checked by build_model.
    arch: str = "tanet"
    # action classes, or training identities for ReID. None: taken from the training set when training starts
    # (ReID: its identities; action: the length of the class names file, see data.labels_file, else the
    # largest training label + 1) and stored in the checkpoint's config, which evaluation then reads.
    num_classes: int | None = None
    num_segments: int = 8  # frames per clip seen by the model in training
    dropout: float = 0.5
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # constructor options of the arch's temporal module (e.g. TAM kernel_size, TemporalShift shift_div, GLTR
    # embed_dim); an absent key keeps the module's (official) default, an unknown key is an error
    temporal_kwargs: dict[str, Any] = field(default_factory=dict)
    # tsm / tanet: the stages (1..4) whose blocks get the temporal module, and every n-th block of each
    temporal_stages: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    temporal_every: int = 1
    # ReID head: official GLTR head (BN-ReLU-Dropout-FC) or strong-baseline BNNeck
    # linear: the single Linear classifier of the Gao & Nevatia baselines
    head: Literal["gltr", "bnneck", "linear"] = "gltr"
    # BNNeck test embedding: after the BN (strong baseline) or before it
    neck_feat: Literal["after", "before"] = "after"
    # ReID: frames per backbone chunk when a whole tracklet is embedded (bounds memory)
    frame_chunk: int = 64
    # fine-tuning: a full checkpoint (this project's, or one of tools/convert_checkpoint.py) whose model
    # weights start the run; tensors of another shape (a head for another number of classes) keep their init
    # and are listed, every other key must match. Not read with --resume (last.pt's weights win). See
    # video_attn.engine.finetune.
    init_from: str | None = None


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SplitConfig(Section):
    """One split (train / val / test / query / gallery) of a dataset."""

    ann_file: str | None = None
    # frame sampling: tsn (segments), dense (stride window), consecutive, evenly, random, all
    sampler: Literal["tsn", "dense", "consecutive", "evenly", "random", "all"] = "tsn"
    num_clips: int = 1  # temporal views (uniform-k grids or dense windows) at test time
    # spatial views: random_multiscale / random_resized for training; center, three, ten for testing;
    # resize (whole frame, no crop; ReID)
    crop: Literal["random_multiscale", "random_resized", "center", "three", "ten", "resize"] = "center"


@dataclass
class DataConfig(Section):
    # dataset format, a name of the dataset builders' registries (action: ACTION_FORMATS of
    # video_attn.data.datasets.action_build; ReID: REID_FORMATS of reid_build); checked by video_attn.tasks
    format: str = "video_list"
    root: str = "data"
    # video decoder (video_attn.data.decoders.open_video); torchcodec needs pip install -e ".[torchcodec]" and
    # FFmpeg's shared libraries (apt-get install ffmpeg)
    backend: Literal["decord", "pyav", "torchcodec"] = "decord"
    # where torchcodec decodes: cuda uses the GPU's decoder (NVDEC); needs backend=torchcodec and
    # num_workers=0 (CUDA cannot start in forked DataLoader workers). Never chosen from the run's device.
    decode_device: Literal["cpu", "cuda"] = "cpu"
    frame_template: str = "img_{:05d}.jpg"  # frame_list: name of frame i (1-based)
    num_workers: int = 4
    pin_memory: bool = True
    frame_interval: int = 8  # dense sampler stride
    input_size: list[int] = field(default_factory=lambda: [224, 224])  # crop (H, W)
    scale_size: int = 256  # short side before cropping at test time
    flip: bool = True
    flip_label_map: dict[int, int] = field(default_factory=dict)  # SSv2 left/right pairs
    # the same pairs read from a file of the dataset (one "a b" pair of class indices a line; relative paths
    # are looked up under data.root), so that they cannot follow the config to other data. The synthetic
    # action generator writes flip_pairs.txt. Exclusive with flip_label_map.
    flip_pairs_file: str | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # after mean/std: subtract each clip's per-channel mean over its frames and pixels (SubtractClipMean)
    subtract_clip_mean: bool = False
    random_erasing: float = 0.0  # probability (ReID)
    split_index: int = 0  # iLIDS-VID / PRID: which of the 10 splits
    # class names, used in evaluation outputs and checkpoints (and for model.num_classes when unset).
    # video_list, frame_list, kinetics: a text file, line i + 1 names class i (kinetics default: the sorted
    # names of data.train.ann_file); sthv2: the official labels JSON (default:
    # something-something-v2-labels.json next to the ann files). None and no default file: the class indices.
    labels_file: str | None = None
    # action datasets: raise on malformed list rows / missing files instead of dropping and reporting them
    strict: bool = False
    # action datasets: replacements tried for a training video that fails to decode before giving up
    max_decode_retries: int = 10
    train: SplitConfig = field(default_factory=lambda: SplitConfig(sampler="tsn", crop="random_multiscale"))
    val: SplitConfig = field(default_factory=SplitConfig)
    test: SplitConfig = field(default_factory=SplitConfig)

    def validate(self, prefix: str) -> None:
        if self.flip_label_map and self.flip_pairs_file:
            raise ConfigError(
                f"{prefix}.flip_label_map and {prefix}.flip_pairs_file are both set; keep one source of the "
                "flip pairs"
            )
        if self.decode_device == "cuda" and self.backend != "torchcodec":
            raise ConfigError(
                f"{prefix}.decode_device=cuda needs {prefix}.backend=torchcodec, got {self.backend}"
            )
        if self.decode_device == "cuda" and self.num_workers > 0:
            raise ConfigError(
                f"{prefix}.decode_device=cuda needs {prefix}.num_workers=0 (CUDA cannot start in forked "
                f"DataLoader workers), got {self.num_workers}"
            )


# --------------------------------------------------------------------------------------------- train
@dataclass
class LossConfig(Section):
    label_smoothing: float = 0.0
    triplet_weight: float = 0.0  # ReID batch-hard triplet; 0 disables
    triplet_margin: float = 0.3
    triplet_soft_margin: bool = False
    center_weight: float = 0.0  # ReID centre loss; 0 disables


@dataclass
class TrainConfig(Section):
    # the length of the run: epochs (100 when neither is set), or a budget in optimiser steps that does not
    # depend on the dataset's size: ceil(iters / steps per epoch) whole epochs (num_epochs). Set one of them.
    epochs: int | None = None
    iters: int = 0
    batch_size: int = 8  # per process
    lr: float = 0.01
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    # official TAM parameter groups: new fc weight lr x5, bias x10; no weight decay on norms and biases
    fc_lr_mult: float = 5.0
    fc_bias_lr_mult: float = 10.0
    no_decay_norm_bias: bool = True
    lr_schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [50, 75, 90])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1
    # linear scaling: lr * total_batch / base_batch_size
    scale_lr: bool = False
    base_batch_size: int = 64
    clip_grad: float | None = 20.0
    accumulation_steps: int = 1
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = True
    checkpoint_every_iters: int = 0  # also write last.pt every N iterations (0: only per epoch)
    eval_every_epochs: int = 1
    log_every_iters: int = 20
    # fine-tuning: parts that do not train. Module paths (backbone, backbone.layer1, classifier, ...): no
    # gradient, eval mode; bn_stats: every BatchNorm layer in eval mode (running statistics fixed, affine
    # parameters still train). Checked against the model (video_attn.engine.finetune.freeze_parts).
    freeze: list[str] = field(default_factory=list)
    # ReID PK sampler: K tracklets per identity (P = batch_size // K); 0 disables the identity sampler
    num_instances: int = 0
    # DynamicConv temperature annealing (per epoch, linear from start to end over anneal_epochs)
    temperature_start: float = 30.0
    temperature_end: float = 1.0
    temperature_anneal_epochs: int = 10
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self, prefix: str) -> None:
        if self.iters < 0:
            raise ConfigError(f"{prefix}.iters must be >= 0 (0: train for {prefix}.epochs), got {self.iters}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"{prefix}.epochs must be >= 1, got {self.epochs}")
        if self.iters > 0 and self.epochs is not None:
            raise ConfigError(
                f"{prefix}.epochs={self.epochs} and {prefix}.iters={self.iters} are both set; keep one "
                f"({prefix}.iters=0 or {prefix}.epochs=null)"
            )

    def num_epochs(self, steps_per_epoch: int) -> int:
        """Epochs of the run: ``train.epochs``, or enough whole epochs for ``train.iters`` optimiser steps."""
        if self.iters > 0:
            return math.ceil(self.iters / steps_per_epoch)
        return 100 if self.epochs is None else self.epochs


# ---------------------------------------------------------------------------------------------- eval
@dataclass
class EvalConfig(Section):
    batch_size: int = 1
    # action multi-view: average logits (official TAM) or softmax probabilities (mmaction2)
    average: Literal["logits", "softmax"] = "logits"
    # ReID
    protocol: Literal["mars_official", "torchreid"] = "torchreid"
    metric: Literal["euclidean", "cosine"] = "euclidean"
    normalize: bool = True  # L2-normalise features before distances (GLTR)
    test_mode: Literal["all", "dense", "evenly"] = "all"
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    max_rank: int = 50


@dataclass
class Config(Section):
    work_dir: str = "work_dirs/default"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # threads of torch's CPU ops per training / evaluation process; 0: the cores the process may use, shared
    # among torchrun processes, minus data.num_workers, at least 1 (video_attn.engine.cpu_threads)
    num_threads: int = 0
    # "action" or "reid"; None: the task of data.format. Checked by video_attn.tasks.build_task against
    # data.format and model.arch.
    task: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self, prefix: str) -> None:
        if self.num_threads < 0:
            raise ConfigError(
                f"num_threads must be >= 0 (0: from the cores and data workers), got {self.num_threads}"
            )
