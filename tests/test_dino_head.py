import pytest
import torch
import torch.nn.functional as F

from lightning_modules.dino_head import DINOHead


def test_shapes_and_layers():
    head = DINOHead(in_dim=12, out_dim=50, hidden_dim=16, bottleneck_dim=8)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 16), (16, 16), (16, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    assert head(torch.randn(5, 12)).shape == (5, 50)


def test_forward_is_cosine_to_unit_prototypes():
    torch.manual_seed(0)
    head = DINOHead(in_dim=6, out_dim=9, hidden_dim=10, bottleneck_dim=4)
    x = torch.randn(3, 6)
    v = head.last_layer.parametrizations.weight.original1
    expected = F.normalize(head.mlp(x), dim=-1) @ (v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expected)
    # With g fixed to 1 every prototype (row of the effective weight) has unit norm.
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(9))
    assert (head(x).abs() <= 1 + 1e-5).all()


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_norm_last_layer_fixes_g(norm_last_layer):
    head = DINOHead(in_dim=6, out_dim=9, hidden_dim=10, bottleneck_dim=4, norm_last_layer=norm_last_layer)
    g = head.last_layer.parametrizations.weight.original0
    assert g.requires_grad is (not norm_last_layer)
    assert torch.equal(g, torch.ones(9, 1))
    head(torch.randn(2, 6)).sum().backward()
    assert (g.grad is None) is norm_last_layer
    assert head.last_layer.parametrizations.weight.original1.grad is not None


def test_single_layer_mlp():
    head = DINOHead(in_dim=6, out_dim=9, hidden_dim=10, bottleneck_dim=4, nlayers=1)
    assert len(head.mlp) == 1 and head(torch.randn(2, 6)).shape == (2, 9)
    with pytest.raises(ValueError):
        DINOHead(in_dim=6, out_dim=9, nlayers=0)
