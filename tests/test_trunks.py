"""Trunk adapters for CLIP, InternViT, Qwen2.5-VL and SigLIP-2 NaFlex.

Small geometries (d=64, 4 heads of 16, m=128) registered as temporary presets keep real CPU runs
cheap; the full-size presets are only counted on ``meta``.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from uhd_profile import UhdProfileError, VariantSpec, build_variant, count_flops
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.encoders import ENCODERS, get_encoder
from uhd_profile.model.variants import example_input
from uhd_profile.units import parse_size

CLIP, INTERN, QWEN, NAFLEX = "clip-vit-l14-336", "internvit-300m-448", "qwen2.5-vl-vit", "siglip2-so400m-p16"
PRESETS = (CLIP, INTERN, QWEN, NAFLEX)

# Native side (px) of each small preset: an 8x8 grid, except Qwen's 16x16 at 224 px, which its
# 112 px (8x8-patch) windows split into 2x2 windows. Qwen gets 8 layers so that block 7 is one of
# its full-attention blocks (7, 15, 23, 31).
SMALL = {
    CLIP: dict(image_size=112),
    INTERN: dict(image_size=112),
    QWEN: dict(image_size=224, layers=8),
    NAFLEX: dict(image_size=128),
}
# a non-square, non-native resolution per preset (position tables get resized); grid sides are
# multiples of 4 so that the 16x connector fits
OFF_NATIVE = {CLIP: "168x56", INTERN: "112x168", QWEN: "280x168", NAFLEX: "192x64"}  # W x H


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: one intra-op thread runs them many times faster than several
    threads contending for a small (often shared) CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_name(preset: str) -> str:
    return f"test-small-{preset}"


@pytest.fixture
def small(monkeypatch):
    """Register the small version of every preset (under ``small_name``) for one test."""
    for preset in PRESETS:
        spec = replace(
            get_encoder(preset), name=small_name(preset), **{"layers": 4, "hidden": 64, "mlp": 128, "heads": 4, **SMALL[preset]}
        )
        monkeypatch.setitem(ENCODERS, spec.name, spec)


def plans(layers: int):
    depth = layers // 2 - 1
    yield dict(post_ratio=1)  # the ViT alone: class tokens kept
    yield dict()  # post-ViT 16x
    for name in COMPRESSORS:
        yield dict(compressor=name, depth=depth)


def output_width(spec: VariantSpec) -> int:
    return spec.llm_hidden if spec.ratio > 1 else spec.enc.hidden


@pytest.mark.parametrize("preset", PRESETS)
def test_every_plan_runs_and_meta_counts_what_runs(small, preset):
    name = small_name(preset)
    for plan in plans(get_encoder(name).layers):
        for resolution in (None, OFF_NATIVE[preset]) if not plan.get("compressor") else (None,):
            spec = VariantSpec(encoder=name, resolution=resolution, **plan)
            torch.manual_seed(0)
            with torch.no_grad():
                out = build_variant(spec, device="cpu")(example_input(spec))
            assert out.shape == (1, spec.tokens_llm, output_width(spec)), spec.id
            assert torch.isfinite(out).all(), spec.id
            meta, real = count_flops(spec), count_flops(spec, shape_only=False)
            assert meta.uncounted_ops == {} and real.uncounted_ops == {}, spec.id
            assert meta.total.macs == real.total.macs, spec.id
            assert meta.total == real.total, spec.id  # flops and paper too


def _trunk_forward(trunk, pixels: torch.Tensor) -> torch.Tensor:
    """Our adapter's path through the tower: embed, every layer, no post-norm."""
    p = trunk.spec.patch
    grid = (pixels.shape[-2] // p, pixels.shape[-1] // p)
    x = trunk.embed_pixels(pixels)
    for i in range(trunk.spec.layers):
        x = trunk.run_layer(i, x, grid)
    return x


@pytest.mark.parametrize("preset", PRESETS)
def test_adapter_reproduces_the_transformers_forward(small, preset):
    enc = get_encoder(small_name(preset))
    torch.manual_seed(0)
    trunk = enc.build()
    hf = trunk.hf.eval()
    for w, h in ((enc.image_size, enc.image_size), parse_size(OFF_NATIVE[preset])):
        pixels = torch.randn(1, 3, h, w)
        gh, gw = h // enc.patch, w // enc.patch
        with torch.no_grad():
            ours = _trunk_forward(trunk, pixels)
            if preset == CLIP:
                theirs = hf(pixels, interpolate_pos_encoding=True).last_hidden_state
            elif preset == INTERN:
                theirs = hf(pixels).last_hidden_state
            elif preset == QWEN:
                # Qwen's own processor layout (merge-unit-major patches); its output stays in its
                # window order, which the adapter's index records
                from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

                flat, _, _ = Qwen2VLImageProcessorPil.patchify(None, pixels[0].numpy(), enc.patch, 2, 2)
                theirs = hf(torch.from_numpy(np.ascontiguousarray(flat)), grid_thw=torch.tensor([[1, gh, gw]]))
                theirs = theirs.last_hidden_state[None]
                ours = ours[:, trunk._grid((gh, gw)).order]
            else:
                from transformers.models.siglip2.image_processing_pil_siglip2 import convert_image_to_patches

                patches = torch.from_numpy(convert_image_to_patches(pixels[0].numpy(), enc.patch))[None]
                theirs = hf(
                    pixel_values=patches,
                    pixel_attention_mask=torch.ones(1, gh * gw, dtype=torch.int32),
                    spatial_shapes=torch.tensor([[gh, gw]]),
                ).last_hidden_state
                ours = trunk.post_norm(ours)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def _attention_macs(spec: VariantSpec) -> int:
    return count_flops(spec).by_op["F.scaled_dot_product_attention"].macs


def test_qwen_window_attention_is_counted_per_window(small):
    name = small_name(QWEN)
    # 224 px: 16x16 grid, 112 px windows = 8x8 patches -> 4 windows of 64 tokens; 4 heads of 16,
    # QK^T + AV = 64*64*(16+16) MACs per head and window.
    #   blocks 0-6 windowed: 7 * 4 windows * 4 heads * 64*64*32 = 7 * 2,097,152 = 14,680,064
    #   block 7 full:            4 heads * 256*256*32                          =  8,388,608
    assert _attention_macs(VariantSpec(encoder=name, post_ratio=1)) == 23_068_672
    # 448 px, window-attn-reused-mlp after block 3: the window rule follows the grid.
    #   blocks 0-3 on 32x32: 4 * 16 windows * 4 heads * 64*64*32     = 4 * 8,388,608 = 33,554,432
    #   compressor's 2x2 windows: 256 windows * 4 heads * 4*4*32     =                    524,288
    #   blocks 4-6 on 16x16: 3 * 4 windows * 4 heads * 64*64*32      = 3 * 2,097,152 =  6,291,456
    #   block 7 full on 16x16: 4 heads * 256*256*32                  =                  8,388,608
    v4 = VariantSpec(encoder=name, resolution=448, compressor="window-attn-reused-mlp", depth=3)
    assert _attention_macs(v4) == 48_758_784


def test_qwen_grid_needs_even_sides(small):
    name = small_name(QWEN)
    with pytest.raises(UhdProfileError, match="15x15"):  # 210 px: odd grid from the start
        count_flops(VariantSpec(encoder=name, resolution=210, post_ratio=1))
    with pytest.raises(UhdProfileError, match="7x7"):  # 196 px: 14x14, halved to 7x7 by the compressor
        count_flops(VariantSpec(encoder=name, resolution=196, compressor="avg-pool", depth=1, post_ratio=1))


def test_layer_parts_are_the_layers_linear_maps(small):
    torch.manual_seed(0)
    x = torch.randn(5, 64)
    with torch.no_grad():
        qwen = get_encoder(small_name(QWEN)).build()
        parts, qkv = qwen.layer_parts(2), qwen.layers[2].attn.qkv(x)
        for j, piece in enumerate((parts.q, parts.k, parts.v)):
            torch.testing.assert_close(piece(x), qkv[:, 64 * j : 64 * (j + 1)])
        assert qwen.geometry(2).gated and parts.gate is qwen.layers[2].mlp.gate_proj

        intern = get_encoder(small_name(INTERN)).build()
        layer, parts = intern.layers[1], intern.layer_parts(1)
        torch.testing.assert_close(parts.o(x), layer.lambda_1 * layer.attention.projection_layer(x))
        hidden = torch.randn(5, 128)
        torch.testing.assert_close(parts.fc2(hidden), layer.lambda_2 * layer.mlp.fc2(hidden))
        assert not intern.geometry(1).gated


# Full-size MACs at the native resolution, ViT alone (post_ratio 1), sdpa; N tokens entering each
# layer (class token included), per layer N*(4d^2 + 2dm) linear (Qwen: N*(4d^2 + 3dm), SwiGLU) plus
# heads * scores * 2*head_dim attention, plus the patch embedding.
#   clip 336: N=577, d=1024, m=4096: 24 * (7,260,340,224 + 681,838,592) + 576*1024*588
#   internvit 448: N=1025, same d, m: 24 * (12,897,484,800 + 2,151,680,000) + 1024*1024*588
#   qwen 448: N=1024, d=1280, m=3420, 16 windows of 64: 28 * (20,158,873,600 + 167,772,160)
#             + 4 full * (20,158,873,600 + 2,684,354,560) + Conv3d 1024*1280*1176
#   siglip2 512: N=1024, d=1152, m=4304: 27 * (15,590,227,968 + 2,415,919,104) + 1024*1152*768
#             + the position-table resize matmul 1024*256*1152
FULL_MACS = {
    CLIP: 190_959_108_096,
    INTERN: 361_796_517_888,
    QWEN: 662_060_400_640,
    NAFLEX: 487_373_930_496,
}


@pytest.mark.parametrize("preset", PRESETS)
def test_full_size_presets_count_on_meta(preset):
    vit = count_flops(VariantSpec(encoder=preset, post_ratio=1))
    assert vit.uncounted_ops == {}
    assert vit.total.macs == FULL_MACS[preset]
    for spec in (VariantSpec(encoder=preset), VariantSpec.alias("v4", encoder=preset)):
        result = count_flops(spec)
        assert result.uncounted_ops == {}, spec.id
        assert result.total.macs > 0


@pytest.mark.parametrize("preset", PRESETS)
def test_a_batch_is_images_side_by_side(small, preset):
    spec = VariantSpec(encoder=small_name(preset), compressor="window-attn-reused-mlp", depth=1, post_ratio=1)
    torch.manual_seed(0)
    model = build_variant(spec)
    pixels = example_input(spec, batch=2)
    with torch.no_grad():
        together = model(pixels)
        apart = torch.cat([model(pixels[:1]), model(pixels[1:])])
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-4)
    assert count_flops(spec, batch=2).total.macs == 2 * count_flops(spec).total.macs
