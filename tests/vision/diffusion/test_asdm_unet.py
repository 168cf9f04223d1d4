import copy

import pytest
import torch
import torch.nn.functional as F

import vision.diffusion  # noqa: F401  (registers the tasks, digits16-diffusion, UNet and ASDMStudent)
from graphattn.config import Config
from graphattn.training import RunDir, Trainer
from vision.diffusion.asdm import GRIAttention
from vision.diffusion.asdm_unet import ASDMStudent, CondConv2d, CondConvBlock, prune_to_condconv, use_gri
from vision.diffusion.data import load_digits_diffusion
from vision.diffusion.distill import distill_losses
from vision.diffusion.unet import UNet

TINY = {"unet_channels": [8, 16], "unet_blocks": 2, "unet_heads": 2, "label_tokens": 2, "context_dim": 8,
        "norm_groups": 4, "timesteps": 20, "noise_schedule": "cosine", "image_size": 8, "valid_ratio": 0.1,
        "test_ratio": 0.2, "split_seed": 0}
DATA = load_digits_diffusion(TINY)
STUDENT = {"image_size": 8, "timesteps": 20, "teacher_overrides": {"unet_channels": [8, 16], "context_dim": 8},
           "train_batch_size": 256, "show_progress": False, "log_level": "WARNING"}


def teacher():
    torch.manual_seed(0)
    m = UNet(TINY, DATA)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return m.eval()


def test_condconv_equals_a_per_image_conv_with_the_routed_kernel():
    torch.manual_seed(0)
    cc = CondConv2d(3, 5, 3, experts=4)
    torch.nn.init.normal_(cc.route.weight)
    x = torch.randn(2, 3, 6, 6)
    out = cc(x)
    for b in range(2):
        r = F.softmax(cc.route(x[b].mean((1, 2))), -1)
        w = sum(r[e] * cc.weight[e] for e in range(4))
        bias = sum(r[e] * cc.bias[e] for e in range(4))
        assert torch.allclose(out[b], F.conv2d(x[b:b + 1], w, bias, padding=1)[0], atol=1e-5)
    one = CondConv2d(3, 5, 3, experts=1)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    conv.weight.data, conv.bias.data = one.weight.data[0].clone(), one.bias.data[0].clone()
    assert torch.allclose(one(x), conv(x), atol=1e-6)
    with pytest.raises(ValueError, match="input channels"):
        cc(torch.randn(1, 4, 6, 6))


def test_inherited_experts_copy_the_removed_kernels_and_random_ones_do_not():
    block = teacher().down[0][1]
    inh = CondConvBlock.from_resblock(block, experts=4, init="inherit")
    for e, conv in enumerate([block.conv1, block.conv2, block.conv1, block.conv2]):
        assert torch.equal(inh.conv.weight[e], conv.weight) and torch.equal(inh.conv.bias[e], conv.bias)
    assert torch.equal(inh.norm.weight, block.norm1.weight) and torch.equal(inh.norm.bias, block.norm1.bias)
    r = inh.conv.routing(torch.randn(3, 8, 8, 8))
    assert torch.allclose(r, torch.full_like(r, 0.25), atol=0.02)                 # starts near the expert mean
    rnd = CondConvBlock.from_resblock(block, experts=4, init="random")
    assert not torch.allclose(rnd.conv.weight[0], block.conv1.weight)
    with pytest.raises(ValueError, match="unknown 'copy'"):
        CondConvBlock.from_resblock(block, 4, "copy")
    with pytest.raises(ValueError, match="C -> C"):
        CondConvBlock.from_resblock(teacher().down[1][0], 4, "inherit")      # 8 -> 16 block


def test_student_a_is_the_teacher_with_gri_carrying_its_projections():
    t = teacher()
    s = copy.deepcopy(t)
    use_gri(s, region=4, pool=4, mode="union")
    assert isinstance(s.self_attn.attn, GRIAttention)
    x, tt, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 7]), torch.tensor([4, 10])
    assert not torch.allclose(s(x, tt, y), t(x, tt, y))                          # a sparser graph: a new function
    s.self_attn.attn = s.self_attn.attn.attn                                      # its GraphAttention on the full graph
    assert torch.allclose(s(x, tt, y), t(x, tt, y), atol=1e-6)                   # = the teacher, bit for bit in weights


def test_student_b_prunes_one_block_per_level_and_keeps_matched_features():
    t = teacher()
    s = copy.deepcopy(t)
    names = prune_to_condconv(s, experts=4, init="inherit")
    assert names == ["down.0.1", "down.1.1", "up.0.1", "up.1.1"]
    x, tt, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 7]), torch.tensor([4, 10])
    _, ft = t(x, tt, y, return_features=True)
    _, fs = s(x, tt, y, return_features=True)
    assert [f.shape for f in fs] == [f.shape for f in ft]
    one = copy.deepcopy(t)
    for level in list(one.down) + list(one.up):
        del level[1]
    with pytest.raises(ValueError, match="unet_blocks must be >= 2"):
        prune_to_condconv(one, 4, "inherit")


def test_distill_losses_vanish_for_a_copy_of_the_teacher_and_match_by_hand():
    t = teacher()
    x, tt, y, noise = torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 19]), torch.tensor([1, 2, 10]), torch.randn(3, 1, 8, 8)
    same = distill_losses(copy.deepcopy(t), t, x, tt, y, noise)
    assert float(same["teacher_mse"].detach()) == 0 and float(same["feature_mse"].detach()) == 0
    assert torch.isclose(same["noise_mse"], ((t(x, tt, y) - noise) ** 2).mean())
    s = copy.deepcopy(t)
    use_gri(s, 4, 4, "union")
    terms = distill_losses(s, t, x, tt, y, noise)
    (es, fs), (et, ft) = s(x, tt, y, return_features=True), t(x, tt, y, return_features=True)
    assert torch.isclose(terms["teacher_mse"], ((es - et) ** 2).mean())
    assert torch.isclose(terms["feature_mse"], torch.stack([((a - b) ** 2).mean() for a, b in zip(fs, ft)]).mean())


def test_student_from_a_teacher_run_folder_and_distillation_lowers_the_loss(tmp_path):
    cfg = Config("UNet", "digits16-diffusion", config_dict={
        "epochs": 1, "image_size": 8, "timesteps": 20, "unet_channels": [8, 16], "context_dim": 8,
        "train_batch_size": 512, "eval_draws": 1, "show_progress": False, "log_level": "WARNING",
        "checkpoint_dir": str(tmp_path)})
    with RunDir.create(cfg) as run:
        Trainer.from_config(cfg, run).fit()
        folder = run.path
    tstate = torch.load(folder / "best.pt", weights_only=True)["model"]
    scfg = Config("ASDMStudent", "digits16-diffusion", config_dict={
        **STUDENT, "teacher_run": str(folder), "student": "B", "epochs": 2, "eval_step": 2, "learning_rate": 3e-3,
        "train_batch_size": 512, "eval_draws": 1})
    trainer = Trainer.from_config(scfg)
    student = trainer.model
    assert isinstance(student, ASDMStudent) and student.pruned
    assert torch.equal(student.state_dict()["self_attn.attn.attn.score.q.weight"], tstate["self_attn.attn.score.q.weight"])
    assert torch.equal(student.state_dict()["down.0.1.conv.weight"][1], tstate["down.0.1.conv2.weight"])
    trainer.fit()
    losses = trainer.task.step_losses
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2])
    with pytest.raises(ValueError, match="timesteps"):
        Trainer.from_config(Config("ASDMStudent", "digits16-diffusion",
                                   config_dict={**STUDENT, "teacher_run": str(folder), "timesteps": 50}))


def test_bad_student_configs_give_clear_errors(tmp_path):
    def build(**over):
        return Trainer.from_config(Config("ASDMStudent", "digits16-diffusion", config_dict={**STUDENT, **over}))

    with pytest.raises(FileNotFoundError, match="has no config.yaml"):
        build(teacher_run=str(tmp_path))
    with pytest.raises(ValueError, match="student: unknown 'C'"):
        build(student="C")
    with pytest.raises(ValueError, match="expert_init: unknown"):
        build(expert_init="zeros")
    with pytest.raises(ValueError, match="gri_mode: unknown"):
        build(gri_mode="concat")
    with pytest.raises(ValueError, match="must divide"):
        build(gri_region=3)
    with pytest.raises(ValueError, match="teacher_overrides: unknown UNet key"):
        build(teacher_overrides={"channels": [8]})
    with pytest.raises(ValueError, match="distill_"):
        build(distill_noise_weight=0.0, distill_teacher_weight=0.0, distill_feature_weight=0.0)
