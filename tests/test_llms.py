"""LLM presets: geometry as built, parameter counts, the MiniCPM-V 4.6 default text model, reduced
depth, local checkpoints and config-only specs, one-line errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.llms import DEFAULT_LLM, FULL, LINEAR, LLMS, geometry_differences, get_llm, llm_spec_from_config


def _params_from_geometry(s) -> int:
    """Parameters implied by the geometry (weights and norm scales), for a cross-check with the
    module actually built: embeddings, per-layer attention/linear-attention/MLP, final norm, head."""
    d, e = s.hidden, s.head_dim
    total = s.vocab * d * (1 if s.tied_embeddings else 2) + d  # embeddings (+ LM head) + final norm
    for kind in s.types:
        layer = 3 * d * s.mlp + 2 * d  # SwiGLU MLP + two RMSNorm scales
        if kind == FULL:
            q = s.heads * e * (2 if s.attn_output_gate else 1)
            layer += d * q + 2 * d * s.kv_heads * e + s.heads * e * d
            if s.qkv_bias:
                layer += s.heads * e + 2 * s.kv_heads * e
            if s.qk_norm:
                layer += 2 * e
        else:
            kd, vd = s.linear_k_heads * s.linear_k_dim, s.linear_v_heads * s.linear_v_dim
            conv = 2 * kd + vd
            layer += d * conv + d * vd + 2 * d * s.linear_v_heads + vd * d  # in_proj qkv, z, b, a; out_proj
            layer += conv * s.conv_kernel + 2 * s.linear_v_heads + s.linear_v_dim  # conv, dt_bias + A_log, gated norm
        total += layer
    return total


@pytest.mark.parametrize("name", list(LLMS))
def test_preset_builds_on_meta_with_its_geometry(name):
    spec = get_llm(name)
    model = spec.build("meta")
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (spec.layers, spec.hidden, spec.mlp)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (spec.heads, spec.kv_heads, spec.vocab)
    assert len(model.model.layers) == spec.layers
    assert all(p.device.type == "meta" for p in model.parameters())  # nothing materialised
    assert sum(p.numel() for p in model.parameters()) == _params_from_geometry(spec)
    assert model.lm_head.out_features == spec.vocab


def test_reference_parameter_counts():
    # reference sizes from the model cards (8.2B, 6.7B, 7.6B): the presets are those models
    expected = {"qwen3-8b": (8.1e9, 8.3e9), "llama-2-7b": (6.6e9, 6.8e9), "qwen2.5-7b": (7.5e9, 7.7e9)}
    for name, (lo, hi) in expected.items():
        n = sum(p.numel() for p in get_llm(name).build("meta").parameters())
        assert lo < n < hi, (name, n)


def test_default_and_lookup():
    assert DEFAULT_LLM == "qwen3-8b"
    assert get_llm("qwen3-8b").layers == 36 and get_llm("qwen3-8b").kv_heads == 8
    with pytest.raises(UhdProfileError) as exc:
        get_llm("gpt-5")
    msg = str(exc.value)
    assert "\n" not in msg and "'gpt-5'" in msg and "qwen3-8b" in msg and "tiny-llm" in msg


def test_minicpm_preset_is_the_transformers_default_text_model():
    from transformers.models.minicpmv4_6.configuration_minicpmv4_6 import MiniCPMV4_6Config

    text = MiniCPMV4_6Config().text_config
    spec = get_llm("minicpm-v-4.6-llm")
    assert type(text).__name__ == "Qwen3_5TextConfig"
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size) == (spec.layers, spec.hidden, spec.mlp)
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (spec.heads, spec.kv_heads, spec.head_dim)
    assert text.vocab_size == spec.vocab and tuple(text.layer_types) == spec.types
    assert (text.linear_num_key_heads, text.linear_num_value_heads) == (spec.linear_k_heads, spec.linear_v_heads)
    assert (text.linear_key_head_dim, text.linear_value_head_dim) == (spec.linear_k_dim, spec.linear_v_dim)
    assert text.linear_conv_kernel_dim == spec.conv_kernel
    assert text.rope_parameters["partial_rotary_factor"] == spec.partial_rotary
    assert bool(text.tie_word_embeddings) == spec.tied_embeddings
    assert spec.attention_layers == tuple(range(3, 32, 4)) and spec.hybrid


def test_reduced_depth_copy():
    spec = get_llm("minicpm-v-4.6-llm")
    r = spec.reduced(4)
    assert (r.layers, r.full_layers, r.types) == (4, 32, (LINEAR, LINEAR, LINEAR, FULL))
    assert r.name == "minicpm-v-4.6-llm[:4]" and r.reduced(2).full_layers == 32
    model = r.build("meta")
    assert len(model.model.layers) == 4 and model.config.layer_types == list(r.types)
    assert get_llm("qwen3-8b").reduced(2).types == (FULL, FULL)
    for bad in (0, 37, 2.5, True):
        with pytest.raises(UhdProfileError) as exc:
            get_llm("qwen3-8b").reduced(bad)
        assert "\n" not in str(exc.value) and "1 to 36" in str(exc.value)


def test_bad_attention_backend():
    with pytest.raises(UhdProfileError, match="valid: sdpa, eager"):
        get_llm("tiny-llm").build("meta", attn="flash")


@pytest.mark.parametrize("name", ["tiny-llm", "tiny-hybrid-llm"])
def test_local_checkpoint_loads_and_is_checked(tmp_path, name):
    spec = get_llm(name)
    torch.manual_seed(0)
    saved = spec.build("cpu")
    saved.save_pretrained(tmp_path)
    loaded = spec.build("cpu", weights=tmp_path)
    assert torch.equal(loaded.model.layers[1].mlp.up_proj.weight, saved.model.layers[1].mlp.up_proj.weight)
    assert geometry_differences(llm_spec_from_config(tmp_path), spec) == ""
    # a reduced-depth copy loads only the first layers, with the checkpoint's weights
    short = spec.reduced(2).build("cpu", weights=tmp_path)
    assert len(short.model.layers) == 2
    assert torch.equal(short.model.layers[1].mlp.up_proj.weight, saved.model.layers[1].mlp.up_proj.weight)
    # another geometry is refused, naming what differs
    other = dataclasses.replace(spec, mlp=spec.mlp * 2)
    with pytest.raises(UhdProfileError) as exc:
        other.build("cpu", weights=tmp_path)
    assert "\n" not in str(exc.value) and f"mlp {spec.mlp} != {2 * spec.mlp}" in str(exc.value)


def test_weights_errors(tmp_path):
    spec = get_llm("tiny-llm")
    with pytest.raises(UhdProfileError, match="is not a directory"):
        spec.build("cpu", weights=tmp_path / "missing")
    with pytest.raises(UhdProfileError, match="has no config.json"):
        spec.build("cpu", weights=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UhdProfileError) as exc:
        llm_spec_from_config(tmp_path)
    assert "\n" not in str(exc.value) and "not supported" in str(exc.value)


def test_spec_from_a_vlm_config_reads_its_text_model(tmp_path):
    """A VLM checkpoint (here a MiniCPM-V 4.6 config with a small text model, as the released one
    has) yields the text model's geometry, so its LLM can be counted as it is."""
    from transformers.models.minicpmv4_6.configuration_minicpmv4_6 import MiniCPMV4_6Config

    text = dict(
        model_type="qwen3_5_text",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        vocab_size=1000,
        layer_types=["linear_attention"] * 3 + ["full_attention"],
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        linear_key_head_dim=32,
        linear_value_head_dim=32,
    )
    MiniCPMV4_6Config(text_config=text, tie_word_embeddings=True).save_pretrained(tmp_path)
    spec = llm_spec_from_config(tmp_path, name="released-like")
    assert (spec.family, spec.hidden, spec.mlp, spec.layers, spec.heads, spec.kv_heads) == ("qwen3_5", 128, 256, 4, 2, 1)
    assert spec.tied_embeddings and spec.attention_layers == (3,)
    model = spec.build("meta")
    assert sum(p.numel() for p in model.parameters()) == _params_from_geometry(spec)
