import math

import pytest
import torch

import vision  # noqa: F401
from graphattn import registry
from graphattn.config import Config
from graphattn.training import RunDir
from vision.base import IGNORE_INDEX
from vision.datasets.gaze_objects import AOI_LABELS, FrameDataset, make_frames, read_recording, write_recording
from vision.graphs.object_graph import EDGE_DIM, collate_frames, fixated_box, frame_edges, relation_features
from vision.impn import IMPN, frame_aoi
from graphattn.training import Trainer
from vision.task import load_data as build_data


def test_relation_features_by_hand_and_signed():
    boxes = torch.tensor([[0.2, 0.5, 0.1, 0.2], [0.6, 0.2, 0.2, 0.1]])
    ei = frame_edges(boxes)
    assert ei.tolist() == [[0, 1], [1, 0]]
    s = relation_features(boxes, ei)
    assert s.shape == (2, EDGE_DIM)
    torch.testing.assert_close(s[0], torch.tensor([-0.4, 0.3, math.log(0.5), math.log(2.0), 0.5, 0.6, -0.8]), atol=1e-5, rtol=0)
    torch.testing.assert_close(s[1, :4], -s[0, :4])                     # u -> v is the mirror of v -> u
    knn = frame_edges(torch.tensor([[0.0, 0, 1, 1], [0.1, 0, 1, 1], [0.9, 0, 1, 1]]), k=1)
    assert sorted(map(tuple, knn.T.tolist())) == [(0, 1), (1, 0), (1, 2)]   # nearest sender of each node


def test_collate_offsets_and_fixation():
    frames = make_frames(3, "iid", seed=0)
    batch = collate_frames(frames)
    sizes = [f["boxes"].shape[0] for f in frames]
    assert batch.x.shape[0] == sum(sizes) and batch.edge_index.shape[1] == sum(n * (n - 1) for n in sizes)
    assert (batch.batch[batch.edge_index[0]] == batch.batch[batch.edge_index[1]]).all()   # no edge between frames
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.1, 0.1], [0.9, 0.9, 0.05, 0.05]])
    assert fixated_box(boxes, torch.tensor([0.5, 0.52])) == 1                # smallest containing box
    assert fixated_box(boxes, torch.tensor([0.05, 0.05])) == -1


def test_synthetic_labels_are_left_right_by_image_x():
    for cond in ("iid", "viewpoint", "more_objects"):
        for f in make_frames(20, cond, seed=1):
            y, cx = f["y"], f["boxes"][:, 0]
            for left, right in ((1, 2), (4, 5)):
                assert (y == left).sum() == 1 and (y == right).sum() == 1
                assert cx[y == left] < cx[y == right]
            if cond == "more_objects":
                assert len(y) >= 11


def _model(**over):
    cfg = Config("IMPN", "gaze_objects", config_dict={"num_train": 8, "num_valid": 4, "num_test": 4, **over})
    torch.manual_seed(0)
    data = build_data(cfg)
    return IMPN(cfg, data), data


def test_permutation_equivariant_and_relation_aware():
    model, data = _model()
    model.eval()
    frame = data.train[0]
    perm = torch.randperm(frame["boxes"].shape[0])
    shuffled = {"x": frame["x"][perm], "boxes": frame["boxes"][perm], "y": frame["y"][perm], "gaze": frame["gaze"]}
    with torch.no_grad():
        a = model(collate_frames([frame]))
        b = model(collate_frames([shuffled]))
        torch.testing.assert_close(a[perm], b)
        # mirror the frame left-right: identical appearance, mirrored relations -> different outputs
        mirrored = dict(frame, boxes=frame["boxes"] * torch.tensor([-1.0, 1, 1, 1]) + torch.tensor([1.0, 0, 0, 0]))
        assert not torch.allclose(a, model(collate_frames([mirrored])), atol=1e-4)
        no_edges, _ = _model(edge_features=False)
        no_edges.eval()
        torch.testing.assert_close(no_edges(collate_frames([frame])), no_edges(collate_frames([mirrored])))  # blind to left/right


def test_mean_aggregation_equals_hand_computed_graphsage():
    model, data = _model(num_layers=1, dropout=0.0)
    model.eval()
    batch = collate_frames([data.train[0]])
    with torch.no_grad():
        h = model.encoder(batch.x)
        layer = model.layers[0]
        src, dst = batch.edge_index
        msg = torch.relu(layer.message.linear(torch.cat([h[src], batch.edge_attr], -1)))
        agg = torch.zeros_like(h).index_add_(0, dst, msg) / torch.bincount(dst, minlength=h.shape[0]).clamp_min(1)[:, None]
        expected = model.classifier(torch.relu(layer.update.linear(torch.cat([h, agg], -1))))
        torch.testing.assert_close(model(batch), expected)


def test_single_box_frame_and_unlabelled_nodes():
    model, data = _model()
    f = data.train[0]
    lonely = {"x": f["x"][:1], "boxes": f["boxes"][:1], "y": torch.tensor([IGNORE_INDEX]), "gaze": f["gaze"]}
    batch = collate_frames([lonely, f])
    loss, logits, _ = model.compute_loss(batch)
    assert torch.isfinite(loss) and torch.isfinite(logits).all()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    pred, true = frame_aoi(logits, batch)
    assert pred.shape == true.shape == (2,)


def test_recording_round_trip_and_errors(tmp_path):
    frames = make_frames(6, "iid", seed=2, node_geometry="size")
    write_recording(tmp_path / "rec", frames, labelled={0, 1, 2, 3})
    loaded, labels = read_recording(tmp_path / "rec", node_geometry="size")
    assert labels == list(AOI_LABELS) and len(loaded) == 6
    for a, b in zip(frames, loaded):
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(a["x"][:, :16], b["x"][:, :16], atol=1e-5, rtol=0)
        torch.testing.assert_close(a["gaze"], b["gaze"], atol=1e-4, rtol=0)
    assert loaded[0]["y"].tolist() == frames[0]["y"].tolist()
    assert (loaded[5]["y"] == IGNORE_INDEX).all()                              # unlabelled frame
    det = tmp_path / "rec" / "detections.csv"
    lines = det.read_text().splitlines()
    det.write_text("\n".join(lines[:2] + [lines[2].replace(",tablet,", ",chair,").replace(",book,", ",chair,").replace(",device,", ",chair,").replace(",other,", ",chair,")] + lines[3:]))
    with pytest.raises(ValueError, match=r"detections.csv, line 3: class 'chair'"):
        read_recording(tmp_path / "rec")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        read_recording(tmp_path / "missing")
    det.write_bytes(b"frame,x1,y1,x2,y2,class\n0,1,2,3,4,book\n\xff\xd8\xff\xe0 JFIF\n")  # not text
    with pytest.raises(ValueError, match=r"detections.csv, line 3: not UTF-8 text \(byte 0xff\)"):
        read_recording(tmp_path / "rec")


def test_trains_on_a_recording_through_the_trainer(tmp_path):
    write_recording(tmp_path / "rec", make_frames(60, "iid", seed=3))
    config = Config("IMPN", "gaze_recording", config_dict={"recording_dir": str(tmp_path / "rec"), "epochs": 3, "show_progress": False,
                                                          "device": "cpu", "checkpoint_dir": str(tmp_path / "saved")})
    with RunDir.create(config) as run:
        test = Trainer.from_config(config, run).fit()
    assert 0.0 <= test["accuracy"] <= 1.0
    data = build_data(config)
    assert isinstance(data.train, FrameDataset) and len(data.train) + len(data.valid) + len(data.test) == 60
