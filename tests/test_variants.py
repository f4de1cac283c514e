"""Variants: every combination runs, token counts follow the design, reuse-init has its defining
property, and the window attention is one batched call."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import COMPRESSORS, FusionMLP, WindowAttention, unshuffle, windows
from uhd_profile.model.variants import VariantSpec, build_variant, example_input

TINY_LAYERS = 4
TINY_D = 64


@pytest.mark.parametrize("post_ratio", [1, 4, 16])
@pytest.mark.parametrize("depth", range(TINY_LAYERS))
@pytest.mark.parametrize("compressor", list(COMPRESSORS))
def test_every_combination_runs_with_design_token_counts(compressor, depth, post_ratio):
    spec = VariantSpec(encoder="tiny", compressor=compressor, depth=depth, post_ratio=post_ratio)
    out = build_variant(spec)(example_input(spec))
    # 8x8 grid -> 4x4 after the in-ViT compressor -> / post_ratio
    assert spec.tokens_in == 64
    assert out.shape == (1, 16 // post_ratio, 4096 if post_ratio > 1 else TINY_D)
    assert spec.tokens_llm == out.shape[1]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("post_ratio", [1, 4, 16])
def test_baseline_runs(post_ratio):
    spec = VariantSpec(encoder="tiny", post_ratio=post_ratio)
    out = build_variant(spec)(example_input(spec, batch=2))
    assert out.shape == (2, 64 // post_ratio, 4096 if post_ratio > 1 else TINY_D)


def test_ids_are_stable_and_distinct():
    a = VariantSpec.alias("v4", post_ratio=1)
    assert a.id == "siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post1"
    assert VariantSpec.alias("baseline", resolution="672x448").id == "siglip2-so400m-p14@672x448/baseline/post16"
    assert a == VariantSpec(compressor="window-attn-reused-mlp", depth=6, post_ratio=1)
    assert len({VariantSpec(compressor=c, depth=6, post_ratio=1).id for c in COMPRESSORS}) == len(COMPRESSORS)


def test_unshuffle_order_is_tl_tr_bl_br():
    # grid 2x4 of scalar tokens numbered row-major
    x = torch.arange(8.0).reshape(1, 8, 1)
    assert unshuffle(x, (2, 4)).squeeze(-1).tolist() == [[[0.0, 1.0, 4.0, 5.0], [2.0, 3.0, 6.0, 7.0]]]


def _tiny_with_layer(spec):
    model = build_variant(spec)
    return model, model.trunk.layers[spec.depth]


def test_reuse_init_fused_mlp_is_average_of_layer_ffn():
    """Paper-spec 7: at init the fused MLP equals the mean of layer k's FFN over the window's four
    tokens, up to the joint LayerNorm (neutralised here on both sides)."""
    torch.manual_seed(0)
    spec = VariantSpec(encoder="tiny", compressor="reused-mlp", depth=2, post_ratio=1)
    model, layer = _tiny_with_layer(spec)
    fused: FusionMLP = model.compressor
    fused.pre_norm = nn.Identity()
    x = torch.randn(2, 64, TINY_D)
    grid = (8, 8)
    got = fused(x, grid)
    ffn = layer.mlp(x)  # layer k's FFN per token, its LayerNorm2 left out like the joint one
    want = windows(x, grid).mean(dim=2) + windows(ffn, grid).mean(dim=2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_reuse_init_joint_norm_is_the_only_difference():
    torch.manual_seed(0)
    spec = VariantSpec(encoder="tiny", compressor="reused-mlp", depth=2, post_ratio=1)
    model, layer = _tiny_with_layer(spec)
    x = torch.randn(1, 64, TINY_D) * 3 + 1
    grid = (8, 8)
    per_token = windows(x, grid).mean(dim=2) + windows(layer.mlp(layer.layer_norm2(x)), grid).mean(dim=2)
    # with the joint LayerNorm over 4d in place the outputs differ: the property is not vacuous
    assert not torch.allclose(model.compressor(x, grid), per_token, atol=1e-3)


def test_reuse_init_copies_window_attention_and_norms():
    spec = VariantSpec(encoder="tiny", compressor="window-attn-reused-mlp", depth=1, post_ratio=1)
    model, layer = _tiny_with_layer(spec)
    attn: WindowAttention = model.compressor.attn
    for mine, theirs in (
        (attn.q, layer.self_attn.q_proj),
        (attn.k, layer.self_attn.k_proj),
        (attn.v, layer.self_attn.v_proj),
        (attn.o, layer.self_attn.out_proj),
    ):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    assert torch.equal(attn.norm1.weight, layer.layer_norm1.weight)
    mlp = model.compressor.mlp
    assert torch.equal(mlp.pre_norm.weight, layer.layer_norm2.weight.repeat(4))
    m, d = layer.mlp.fc1.weight.shape
    w1 = mlp.linear_1.weight
    assert torch.equal(w1[m : 2 * m, d : 2 * d], layer.mlp.fc1.weight)
    assert torch.count_nonzero(w1[:m, d:]) == 0  # block-diagonal
    torch.testing.assert_close(mlp.linear_2.weight, layer.mlp.fc2.weight.repeat(1, 4) / 4)
    assert torch.equal(mlp.linear_2.bias, layer.mlp.fc2.bias)  # not scaled


def test_random_designs_are_not_reused():
    spec = VariantSpec(encoder="tiny", compressor="window-attn-mlp", depth=1, post_ratio=1)
    model, layer = _tiny_with_layer(spec)
    assert model.compressor.mlp.linear_1.weight.shape == (4 * TINY_D, 4 * TINY_D)
    assert torch.equal(model.compressor.attn.q.weight, layer.self_attn.q_proj.weight)


def test_window_attention_is_one_batched_call():
    spec = VariantSpec(compressor="window-attn-reused-mlp", depth=6, post_ratio=1)
    model = build_variant(spec, device="meta")
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, *a, **k):
        calls.append(tuple(q.shape))
        return real(q, *a, **k)

    x = torch.empty(1, 4900, 1152, device="meta")
    with mock.patch.object(F, "scaled_dot_product_attention", spy):
        model.compressor.attn(x, (70, 70))
    assert calls == [(1225, 16, 4, 72)]


def test_window_attention_stays_inside_windows():
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, nn.LayerNorm(8))
    x = torch.randn(1, 16, 8)
    y = attn(x, (4, 4))
    x2 = x.clone()
    x2[0, 15] += 5 * torch.randn(8)  # bottom-right token: only its window (tokens 10, 11, 14, 15) may change
    changed = (attn(x2, (4, 4)) - y).abs().sum(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [10, 11, 14, 15]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(encoder="qwen2.5-vl-vit", resolution=435), "is not a multiple of qwen2.5-vl-vit's patch size 14"),
        (dict(encoder="siglip2-so400m-p16", resolution="512x500"), "height 500 is not a multiple"),
        (dict(resolution=13), "smaller than siglip2-so400m-p14's patch size 14"),
        (dict(resolution=(896, 1344)), "ambiguous"),
        (dict(encoder="tiny", resolution=72, compressor="avg-pool", depth=1), "even token grid"),
        (dict(compressor="avg-pool", depth=27), "valid depths are 0..26"),
        (dict(compressor="avg-pool", depth=-1), "valid depths are 0..26"),
        (dict(compressor="nope", depth=1), "valid compressors"),
        (dict(encoder="nope"), "valid encoders"),
        (dict(post_ratio=8), "valid: 1, 4, 16"),
        (dict(post_ratio=16), "needs a token grid divisible by 4"),
        (dict(encoder="minicpm-v-4.6", compressor="avg-pool", depth=6, post_ratio=1), "released model"),
        (dict(compressor="avg-pool"), "needs a depth"),
    ],
)
def test_bad_specs_raise_one_clear_error(kwargs, fragment):
    with pytest.raises(UhdProfileError, match=fragment) as info:
        VariantSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_local_checkpoint_loads(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
        vision_use_head=False,
    )
    torch.manual_seed(1)
    saved = SiglipVisionModel(cfg)
    saved.save_pretrained(tmp_path)
    spec = VariantSpec(encoder="tiny", post_ratio=1)
    model = build_variant(spec, weights=str(tmp_path))
    assert torch.equal(model.layers[0].mlp.fc1.weight, saved.encoder.layers[0].mlp.fc1.weight)
    with pytest.raises(UhdProfileError, match="not a directory"):
        build_variant(spec, weights=str(tmp_path / "missing"))


def test_the_design_ratio_is_the_tower_familys_in_every_entry_point():
    """flops, bench and a recipe's post_ratios = ["auto"] all build VariantSpec(post_ratio=None): the
    tower's family merge (EncoderSpec.default_post_ratio), over the in-ViT compressor's 4x."""
    from uhd_profile.model.encoders import ENCODERS

    assert {n: e.default_post_ratio for n, e in ENCODERS.items() if e.default_post_ratio != 16} == {
        "qwen2.5-vl-vit": 4,
        "qwen3-vl-vit": 4,
        "internvit-300m-448": 4,
        "internvit-6b-448": 4,
        "phi4-mm-siglip-448": 4,
        "clip-vit-l14-336": 1,
        "siglip-so400m-p14-384": 1,
        "siglip-so400m-p14-364": 4,  # Idefics3: pixel shuffle 2 (siglip-b16-512, SmolVLM2: 16, the default)
    }
    assert VariantSpec(encoder="qwen2.5-vl-vit", resolution=448).ratio == 4
    assert VariantSpec(encoder="clip-vit-l14-336").ratio == 1
    assert VariantSpec(encoder="siglip2-so400m-p14", resolution=448).ratio == 16
    assert VariantSpec.alias("v4", encoder="siglip2-so400m-p14", resolution=448).ratio == 4
    assert VariantSpec.alias("v4", encoder="internvit-300m-448", resolution=448).ratio == 1
    assert VariantSpec(encoder="qwen2.5-vl-vit", resolution=448, post_ratio=16).ratio == 16


def test_nearest_view_sizes_round_each_side_down_and_up_width_first():
    from uhd_profile.model.variants import nearest_view_sizes
    from uhd_profile.units import Size

    assert nearest_view_sizes(Size(1920, 1080), 14, 2, floors=True) == (Size(1904, 1064), Size(1932, 1092))
    assert nearest_view_sizes(Size(1932, 1080), 14, 2, floors=True) == (Size(1932, 1064), Size(1932, 1092))  # width fits
    assert nearest_view_sizes(Size(20, 20), 14, 2) == (Size(28, 28),)  # nothing below one unit
    with pytest.raises(UhdProfileError, match=r"got 9x5 tokens \(width x height\).*nearest valid: 64x32 or 80x48"):
        VariantSpec(encoder="tiny", resolution="72x40", compressor="avg-pool", depth=1, post_ratio=1)
