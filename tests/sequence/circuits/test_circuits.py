"""The circuit-reuse prompts (formats, corruptions, metric masks) and CircuitGPT (shapes, a short run)."""
import pytest
import torch

import sequence  # noqa: F401  (registers task circuits)
from graphattn.interpret import attention_layers, path_patching
from sequence.circuits.data import TOKEN, VOCAB, CircuitData, decode, sample_mix, sample_task
from sequence.circuits.model import CircuitGPT, logit_diff

CFG = {"circ_dim": 32, "circ_heads": 4, "circ_layers": 2, "circ_mlp": True, "dataset": "circuit-mix"}


def test_ioi_format_and_s2_io_flip():
    b = sample_task("ioi", 16, torch.Generator().manual_seed(0))
    assert b["tokens"].shape == b["corrupt"].shape == (16, 14)
    for i in range(16):
        words = decode(b["tokens"][i]).split()
        io, s = VOCAB[int(b["answer"][i])], VOCAB[int(b["wrong"][i])]
        assert words[0] == "When" and words[-1] == "to" and words[9] == s and words.count(s) == 2
        assert words.count(io) == 1 and io in (words[1], words[3])
        flipped = decode(b["corrupt"][i]).split()
        assert flipped[9] == io and flipped[:9] == words[:9] and flipped[10:] == words[10:]
    assert b["good"].sum(-1).eq(1).all() and b["good"][torch.arange(16), b["answer"]].all()


def test_colored_objects_format_answer_and_mindiff_corruption():
    b = sample_task("colored_objects", 16, torch.Generator().manual_seed(1))
    for i in range(16):
        words = decode(b["tokens"][i]).replace("\n", "NL").split()
        assert words[-1] == "A:" and words.count("Q:") == 2
        colors = [VOCAB[int(b["tokens"][i, p])] for p in b["color_positions"][i]]
        assert len(set(colors)) == 3
        obj = words[-4]
        scene = words[words.index("Q:", 1):]
        assert VOCAB[int(b["answer"][i])] == scene[scene.index(obj) - 1].capitalize()
        assert colors[int(b["answer_slot"][i])].capitalize() == VOCAB[int(b["answer"][i])]
        diff = (b["tokens"][i] != b["corrupt"][i]).nonzero().flatten().tolist()
        assert diff == [b["tokens"].shape[1] - 4]                      # only the queried object changes
        assert b["wrong"][i] != b["answer"][i]


def test_greater_than_masks_and_bad_task_name():
    b = sample_task("greater_than", 32, torch.Generator().manual_seed(2))
    for i in range(32):
        yy = int(b["yy"][i])
        assert b["good"][i, TOKEN[f"{yy + 1:02d}"]] and b["bad"][i, TOKEN[f"{yy:02d}"]]
        assert b["good"][i, b["answer"][i]]
    assert VOCAB[int(b["corrupt"][0, 7])] == "01"
    with pytest.raises(ValueError, match="unknown circuit task 'ioj'"):
        sample_task("ioj", 4)


def test_logit_diff_and_model_shapes():
    model = CircuitGPT(CFG, CircuitData({"ioi": 1.0}))
    b = sample_task("ioi", 5, torch.Generator().manual_seed(3))
    logits = model(b["tokens"])
    assert logits.shape == (5, 14, len(VOCAB))
    last = logits[:, -1]
    expected = (last[torch.arange(5), b["answer"]] - last[torch.arange(5), b["wrong"]]).mean()
    torch.testing.assert_close(logit_diff(last, b), expected)
    assert len(attention_layers(model)) == 2
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(2, 100, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        CircuitGPT({**CFG, "circ_heads": 3}, CircuitData({"ioi": 1.0}))


def test_short_training_lowers_the_loss_and_path_patching_runs():
    torch.manual_seed(0)
    model = CircuitGPT(CFG, CircuitData({"ioi": 1.0}))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(4)
    fixed = sample_mix(32, g, {"ioi": 1.0, "colored_objects": 1.0})
    first = float(model.loss(fixed)[0].detach())
    for _ in range(30):
        loss, _ = model.loss(fixed)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.loss(fixed)[0].detach()) < 0.5 * first
    b = sample_task("ioi", 8, g)
    scores = path_patching(model, b["tokens"], b["corrupt"], "ln_f", lambda y: logit_diff(y[:, -1], b))
    assert len(scores) == 8 and all(torch.isfinite(torch.tensor(list(scores.values()))))
