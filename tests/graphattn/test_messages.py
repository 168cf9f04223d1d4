"""Messages (graphattn/attention/messages.py): value projections per head, the sender's raw features, and the
default per-edge gather."""
import pytest
import torch

from graphattn.attention import GraphAttention
from graphattn.attention.messages import IdentityMessage, Message, ValueMessage


def test_value_message_projects_per_head():
    torch.manual_seed(0)
    msg = ValueMessage(5, heads=2, value_dim=3).double()
    assert (msg.heads, msg.value_dim, msg.per_edge) == (2, 3, False)
    assert msg.v.weight.shape == (6, 5) and msg.v.bias is not None
    x = torch.randn(4, 5, dtype=torch.double)
    v = msg.project(x)
    assert v.shape == (4, 2, 3)
    assert torch.allclose(v.reshape(4, 6), x @ msg.v.weight.T + msg.v.bias)
    assert ValueMessage(5, 2, 3, bias=False).v.bias is None


def test_value_message_reset_parameters_redraws():
    torch.manual_seed(0)
    msg = ValueMessage(5, 2, 3)
    before = msg.v.weight.detach().clone()
    msg.reset_parameters()
    assert not torch.equal(before, msg.v.weight)


def test_identity_message_repeats_the_features_per_head():
    msg = IdentityMessage(4, heads=3)
    assert (msg.heads, msg.value_dim) == (3, 4)
    assert IdentityMessage(4).heads == 1
    x = torch.randn(2, 5, 4)
    v = msg.project(x)
    assert v.shape == (2, 5, 3, 4)
    for h in range(3):
        assert torch.equal(v[:, :, h], x)


def test_default_edge_message_is_the_senders_value():
    msg = IdentityMessage(2)
    v = torch.arange(8.0).reshape(4, 1, 2)
    edge_index = torch.tensor([[3, 0, 3], [1, 1, 2]])
    assert torch.equal(msg.edge(v, edge_index), v[[3, 0, 3]])
    assert torch.equal(msg.edge(v, edge_index, torch.zeros(3, dtype=torch.long)), v[[3, 0, 3]])


def test_message_is_abstract():
    with pytest.raises(TypeError):
        Message()
    assert (Message.per_edge, Message.heads, Message.value_dim) == (False, 1, 0)


def test_layer_builds_messages_by_name():
    layer = GraphAttention(6, 8, heads=2, head_dim=3, src_dim=5)
    assert isinstance(layer.message, ValueMessage)
    assert layer.message.v.weight.shape == (6, 5) and layer.message.v.bias is not None
    assert GraphAttention(6, heads=2, bias=False).message.v.bias is None
    ident = GraphAttention(6, heads=2, src_dim=5, message="identity", update="none")
    assert isinstance(ident.message, IdentityMessage) and (ident.message.heads, ident.message.value_dim) == (2, 5)
    with pytest.raises(ValueError, match="unknown message 'values'"):
        GraphAttention(6, message="values")
