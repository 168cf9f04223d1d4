"""The ``parts_task: relation`` images and the FG-ARI of experiments/dependency_vit_parts.py (issue #20)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import vision  # noqa: F401
from graphattn.config import Config
from vision.datasets.parts import BACKGROUND, PALETTE, RELATIONS, FreshPartsDataset, load_parts_data, relation_label, render_relation
from vision.graphs.parent_tree import patch_majority_labels

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "dependency_vit_parts.py"
FLIP = {0: 1, 1: 0, 2: 3, 3: 2}  # above <-> below, left <-> right


def _experiment():
    spec = importlib.util.spec_from_file_location("dependency_vit_parts_under_test", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _centre(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0)


def test_swapping_the_parts_flips_the_label():
    labels = []
    for seed in range(40):
        img, label, _, parts = render_relation(np.random.default_rng(seed), 24, 0.05)
        img2, label2, _, parts2 = render_relation(np.random.default_rng(seed), 24, 0.05, swap=True)
        assert label2 == FLIP[label]
        assert not np.array_equal(img, img2)
        # same two parts, places exchanged: the disc now sits where the square was (its centre within 0.5 px of the box centre)
        assert np.abs(_centre(parts2 == 1) - _centre(parts == 2)).max() <= 0.75
        labels.append(label)
    assert set(labels) == {0, 1, 2, 3}


def test_label_is_the_relation_of_the_part_masks():
    for seed in range(40):
        img, label, objects, parts = render_relation(np.random.default_rng(100 + seed), 32, 0.0)
        disc, square = parts == 1, parts == 2
        assert disc.sum() > 20 and square.sum() > 20
        dy, dx = _centre(disc) - _centre(square)
        assert label == relation_label(dy, dx)
        assert RELATIONS[label].startswith("disc")
        # masks align with the pixels: each part is one palette colour, the rest background; objects = both parts
        pixels = img.transpose(1, 2, 0)
        for mask in (disc, square):
            colours = np.unique(pixels[mask], axis=0)
            assert len(colours) == 1 and np.isclose(np.abs(PALETTE - colours[0]).sum(1), 0).any()
        assert not np.array_equal(pixels[disc][0], pixels[square][0])
        np.testing.assert_allclose(pixels[parts == 0], BACKGROUND)
        np.testing.assert_array_equal(objects, (parts > 0).astype(np.int64))
        # the parts never touch: at least one 4 px gap along some axis
        ys, xs = np.argwhere(disc).T
        ys2, xs2 = np.argwhere(square).T
        assert max(ys2.min() - ys.max(), ys.min() - ys2.max(), xs2.min() - xs.max(), xs.min() - xs2.max()) > 4


def test_patch_labels_follow_the_parts():
    _, _, _, parts = render_relation(np.random.default_rng(3), 24, 0.05)
    labels = patch_majority_labels(torch.from_numpy(parts), 4).reshape(6, 6)
    for p in (1, 2):
        ys, xs = torch.nonzero(labels == p, as_tuple=True)
        assert len(ys) >= 1
        for y, x in zip(ys.tolist(), xs.tolist()):  # a patch labelled p holds mostly part p
            assert (parts[4 * y : 4 * y + 4, 4 * x : 4 * x + 4] == p).sum() >= 4


def test_loader_option_keeps_the_default():
    relation = load_parts_data(Config("DependencyViT", "parts", config_dict={"parts_task": "relation", "image_size": 24, "num_train": 8,
                                                                             "num_valid": 4, "num_test": 4}))
    assert relation.num_classes == 4 and relation.meta["class_names"] == list(RELATIONS)
    assert relation.test.parts.max() == 2 and isinstance(relation.train, FreshPartsDataset)
    x, y = relation.train[0]
    assert x.shape == (3, 24, 24) and 0 <= int(y) < 4
    types = load_parts_data(Config("DependencyViT", "parts", config_dict={"num_train": 4, "num_valid": 4, "num_test": 4}))
    assert types.num_classes == 9
    with pytest.raises(ValueError, match="parts_task"):
        load_parts_data(Config("DependencyViT", "parts", config_dict={"parts_task": "colour", "num_train": 4, "num_valid": 4, "num_test": 4}))


def test_fg_ari_on_a_hand_made_case():
    fg_ari = _experiment().fg_ari
    truth = torch.tensor([0, 1, 1, 2, 2, 0, 0])
    assert fg_ari(truth, torch.tensor([5, 7, 7, 3, 3, 5, 9])) == pytest.approx(1.0)   # same partition of the parts, other ids
    assert fg_ari(truth, torch.tensor([0, 0, 0, 0, 0, 1, 2])) == pytest.approx(0.0)   # one group for both parts
    assert fg_ari(truth, torch.tensor([1, 1, 2, 1, 2, 1, 1])) < 0                     # crosses the parts
    # background is ignored: regrouping it changes nothing
    assert fg_ari(truth, torch.tensor([4, 7, 7, 3, 3, 8, 4])) == pytest.approx(1.0)
    assert np.isnan(fg_ari(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 2, 3])))  # one part only: undefined


@pytest.mark.parametrize("margin", [4, 5])
def test_margin_keeps_a_background_ring_and_the_gap(margin):
    for seed in range(30):
        img, label, _, parts = render_relation(np.random.default_rng(200 + seed), 32, 0.0, gap=8, margin=margin)
        ring = np.ones((32, 32), dtype=bool)
        ring[margin:32 - margin, margin:32 - margin] = False
        assert (parts[ring] == 0).all() and (parts[~ring] == 1).any() and (parts[~ring] == 2).any()
        ys, xs = np.argwhere(parts == 1).T
        ys2, xs2 = np.argwhere(parts == 2).T
        assert max(ys2.min() - ys.max(), ys.min() - ys2.max(), xs2.min() - xs.max(), xs.min() - xs2.max()) > 8
        dy = ys.mean() - ys2.mean()
        dx = xs.mean() - xs2.mean()
        assert label == relation_label(dy, dx)


def test_margin_zero_draws_the_images_of_before():
    # margin 0 must not change the random stream: the published 24 px runs stay reproducible
    a = render_relation(np.random.default_rng(7), 24, 0.05)
    b = render_relation(np.random.default_rng(7), 24, 0.05, margin=0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # a margin of m px is the layout of the (S - 2m) px image with a background border around it
    bordered = render_relation(np.random.default_rng(7), 32, 0.05, margin=4)
    np.testing.assert_array_equal(bordered[3][4:28, 4:28], a[3])
    assert bordered[1] == a[1]


def test_margin_reaches_the_loader_and_bad_margins_are_named():
    config = {"parts_task": "relation", "image_size": 32, "gap": 8, "margin": 4, "num_train": 4, "num_valid": 4, "num_test": 4}
    data = load_parts_data(Config("DependencyViT", "parts", config_dict=config))
    assert (data.test.parts[:, :4] == 0).all() and (data.test.parts[:, :, -4:] == 0).all()
    for bad in (-1, 9):
        with pytest.raises(ValueError, match="margin: expected"):
            load_parts_data(Config("DependencyViT", "parts", config_dict={**config, "margin": bad}))
