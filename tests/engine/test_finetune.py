"""Fine-tuning: ``model.init_from`` into a head of another size, ``train.freeze`` (module paths and
``bn_stats``), and ``--resume`` taking precedence over ``init_from``."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_testkit import action_config
from torch import nn

from video_attn.apis import train
from video_attn.config.schema import BackboneConfig, ModelConfig
from video_attn.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from video_attn.engine.finetune import FreezeHook, freeze_parts, init_from_checkpoint
from video_attn.models import build_model

SOURCE_CLASSES = 5  # the checkpoint's head; the synthetic data has 3 classes


def tiny(arch: str = "tanet", num_classes: int = 3) -> nn.Module:
    torch.manual_seed(num_classes)
    backbone = BackboneConfig(depth=18, base_width=8)
    return build_model(ModelConfig(arch=arch, num_classes=num_classes, num_segments=4, backbone=backbone))


def test_init_from_skips_other_shapes_and_loads_the_rest_bit_exactly(tmp_path):
    source = tiny(num_classes=SOURCE_CLASSES)
    path = tmp_path / "source.pt"
    atomic_save({"model": source.state_dict(), "config": None}, path)
    target = tiny(num_classes=3)
    head = target.classifier.weight.detach().clone()

    skipped = init_from_checkpoint(target, path)

    assert skipped == ["classifier.weight", "classifier.bias"]
    assert torch.equal(target.classifier.weight, head)  # keeps its initialisation
    loaded = {k: v for k, v in target.state_dict().items() if k not in skipped}
    assert len(loaded) > 100
    for key, value in loaded.items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_init_from_errors_name_the_keys_and_the_file(tmp_path):
    path = tmp_path / "tsn.pt"
    atomic_save({"model": tiny("tsn").state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"tsn.pt does not fit the model .* missing from the file") as e:
        init_from_checkpoint(tiny("tanet"), path)
    assert ".temporal." in str(e.value) and "not in the model" not in str(e.value)  # TANet's TAM keys
    with pytest.raises(CheckpointError, match="model.init_from: checkpoint not found"):
        init_from_checkpoint(tiny(), tmp_path / "nope.pt")


def test_freeze_checks_names_and_keeps_frozen_parts_in_eval_mode():
    model = tiny()
    with pytest.raises(ValueError, match=r"train.freeze: no part 'backbone.layr1' .*valid: bn_stats .*"):
        freeze_parts(model, ["backbone.layr1"])
    with pytest.raises(ValueError, match=r"backbone, backbone\.conv1, backbone\.bn1, backbone\.layer1, "):
        freeze_parts(model, ["dropout"])  # holds no parameter: nothing to freeze
    hook = FreezeHook(freeze_parts(model, ["backbone.layer1", "bn_stats"]))
    model.train()  # what the loop does at every epoch start
    hook.before_step()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert not any(m.training for m in model.backbone.layer1.modules())
    assert model.backbone.layer2.training and model.backbone.layer2[0].conv1.training
    for name, p in model.named_parameters():  # bn_stats fixes statistics only; layer1 is frozen whole
        assert p.requires_grad == (not name.startswith("backbone.layer1.")), name


@pytest.fixture(scope="module")
def finetuned(synthetic_action, tmp_path_factory):
    """One epoch from a 5-class checkpoint into the 3-class synthetic data; layer1, BN statistics frozen."""
    tmp = tmp_path_factory.mktemp("finetune")
    source = tiny(num_classes=SOURCE_CLASSES)
    atomic_save({"model": source.state_dict()}, tmp / "source.pt")
    cfg = action_config(
        synthetic_action,
        tmp / "run",
        model={"init_from": str(tmp / "source.pt")},
        train={"epochs": 1, "freeze": ["backbone.layer1", "bn_stats"]},
        data={"val": {"ann_file": None}},  # no validation: training is what is checked
    )
    train(cfg)
    return cfg, source.state_dict(), tmp / "run"


def test_finetuning_run_loads_trains_and_leaves_frozen_parts(finetuned):
    cfg, source, work = finetuned
    ckpt = load_checkpoint(work / "checkpoints" / "last.pt")
    tuned = ckpt["model"]
    assert ckpt["iteration"] == 4 and tuned["classifier.weight"].shape == (3, 64)
    log = (work / "train.log").read_text()
    assert "classifier.weight (5, 64) in the file, (3, 64) here" in log and "classifier.bias (5,)" in log

    # the frozen stage: every tensor as loaded (weights and BN buffers)
    layer1 = [k for k in tuned if k.startswith("backbone.layer1.")]
    assert layer1 and all(torch.equal(tuned[k], source[k]) for k in layer1)
    # bn_stats: every BN layer's running statistics as loaded, its affine parameters trained
    stats = [k for k in tuned if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 20 and all(torch.equal(tuned[k], source[k]) for k in stats)
    assert not torch.equal(tuned["backbone.layer2.0.bn1.weight"], source["backbone.layer2.0.bn1.weight"])
    assert not torch.equal(tuned["backbone.layer2.0.conv1.weight"], source["backbone.layer2.0.conv1.weight"])

    # frozen parameters are left out of the optimizer
    model = build_model(cfg.model)
    trainable = [n for n, _ in model.named_parameters() if not n.startswith("backbone.layer1.")]
    assert sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"]) == len(trainable)


def test_resume_restores_last_pt_and_does_not_read_init_from(finetuned, tmp_path):
    cfg, _, work = finetuned
    cfg = copy.deepcopy(cfg)
    cfg.model.init_from = str(tmp_path / "deleted.pt")  # not read: the run continues from last.pt
    before = load_checkpoint(work / "checkpoints" / "last.pt")["model"]
    train(cfg, resume=True)  # every epoch is done: restores and stops
    after = load_checkpoint(work / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert "model.init_from is not read: --resume restores" in (work / "train.log").read_text()
