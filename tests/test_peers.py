"""Peer counters (fvcore, thop) on the tiny preset: what they report, pinned against our engine.

The relations below were checked, not assumed. On the tiny baseline (64 px, patch 8: 64 tokens,
d=64, m=128, 4 heads of 16, 4 layers, post-ViT ratio 1) our engine's MACs are

    conv (patch embedding)  64 tokens * 64 out * (3*8*8 = 192)            =    786,432
    Linear (addmm)          4 layers * 64 tokens * (4*64*64 + 2*64*128)   =  8,388,608
    attention (SDPA)        4 layers * 4 heads * 64*64 scores * (16 + 16) =  2,097,152
                                                                    macs  = 11,272,192

and there are 9 LayerNorms over 64 x 64 = 4,096 elements each (2 per layer + post_norm):
36,864 LayerNorm elements.

* fvcore = 8,572,928 = Linear 8,388,608 + 5 * 36,864 LayerNorm (its layer_norm handle, with
  affine). Not "macs minus attention": besides SDPA (aten::scaled_dot_product_attention, which
  fvcore has no handle for), the patch-embedding conv is missing too, because SigLIP builds it with
  padding="valid" and a string padding traces as aten::_convolution_mode, which fvcore has no
  handle for either (both listed in its unsupported_ops); and fvcore adds 5 per LayerNorm element,
  which our ``macs`` convention prices 0. So: fvcore = macs - attention - conv + 5 * LN elements.
* thop = 9,322,496 = Linear 8,388,608 + conv 786,432 + 4 * 36,864 LayerNorm. thop prices Linear
  (in_features per output element) and Conv2d (C_in/groups x kernel per output element) exactly as
  our MACs, does not see the functional SDPA at all, and prices nn.LayerNorm at 2 per element,
  doubled for affine. So: thop = macs - attention + 4 * LN elements.
"""

import sys

import pytest
from torch import nn

from uhd_profile.count import peers
from uhd_profile.count.flops import LAYER_NORM_PER_ELEM, count_flops
from uhd_profile.count.peers import PEER_COUNTERS, PeerCount, run_peer
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.variants import VariantSpec, build_variant, example_input

BASELINE = VariantSpec(encoder="tiny", post_ratio=1)
V4_TINY = VariantSpec(encoder="tiny", compressor="window-attn-reused-mlp", depth=1, post_ratio=1)
SDPA = "F.scaled_dot_product_attention"


def _parts(spec):
    """Our engine's MACs split into the pieces the peers see differently."""
    ours = count_flops(spec)
    attn = ours.by_op[SDPA].macs
    conv = ours.by_op["aten::convolution"].macs
    ln_elems = ours.by_op["aten::native_layer_norm"].flops // LAYER_NORM_PER_ELEM
    return ours, attn, conv, ln_elems


@pytest.fixture(scope="module")
def results():
    return {(c, s.id): run_peer(c, s) for c in PEER_COUNTERS for s in (BASELINE, V4_TINY)}


@pytest.mark.parametrize("counter", PEER_COUNTERS)
@pytest.mark.parametrize("spec", [BASELINE, V4_TINY], ids=["baseline", "v4"])
def test_peer_runs_and_groups_like_our_engine(results, counter, spec):
    r = results[(counter, spec.id)]
    assert isinstance(r, PeerCount) and r.counter == counter and r.variant_id == spec.id
    assert isinstance(r.total, int) and r.total > 0
    assert "MAC" in r.unit
    assert r.notes and r.seconds > 0
    # same groups as FlopCount.grouped(depth=1), and they add up to the library's total
    assert set(r.by_module) == set(count_flops(spec).grouped(1))
    assert sum(r.by_module.values()) == r.total


def test_tiny_baseline_numbers_pinned(results):
    ours, attn, conv, ln_elems = _parts(BASELINE)
    # the arithmetic of the module docstring
    assert (ours.get("macs"), attn, conv, ln_elems) == (11_272_192, 2_097_152, 786_432, 36_864)
    assert ln_elems == 9 * 64 * 64
    assert results[("fvcore", BASELINE.id)].total == 8_572_928
    assert results[("thop", BASELINE.id)].total == 9_322_496


@pytest.mark.parametrize("spec", [BASELINE, V4_TINY], ids=["baseline", "v4"])
def test_fvcore_relation(results, spec):
    r = results[("fvcore", spec.id)]
    ours, attn, conv, ln_elems = _parts(spec)
    assert r.total == ours.get("macs") - attn - conv + 5 * ln_elems
    # what it skipped is reported, not hidden: every SDPA call (one per layer, one more in the
    # compressor) and the string-padding patch conv
    layers = spec.enc.layers + (1 if spec.compressor else 0)
    assert r.unsupported_ops["aten::scaled_dot_product_attention"] == layers
    assert r.unsupported_ops["aten::_convolution_mode"] == 1
    assert r.by_module["embed"] == 0  # the conv is its only arithmetic
    assert any("SDPA" in n for n in r.notes)


@pytest.mark.parametrize("spec", [BASELINE, V4_TINY], ids=["baseline", "v4"])
def test_thop_relation(results, spec):
    r = results[("thop", spec.id)]
    ours, attn, conv, ln_elems = _parts(spec)
    assert r.total == ours.get("macs") - attn + 4 * ln_elems
    assert r.by_module["embed"] == conv  # Conv2d priced exactly as our MACs
    # leaf modules with no thop rule, per call: the tanh-GELU of every MLP (the v4 compressor's
    # reused MLP calls layer 1's activation module once more) and the position table
    gelu = spec.enc.layers + (1 if spec.compressor else 0)
    assert r.unsupported_ops == {"transformers.activations.GELUTanh": gelu, "torch.nn.modules.sparse.Embedding": 1}
    assert any("functional ops" in n and "invisible" in n for n in r.notes)


def test_thop_leaves_the_model_clean():
    model = build_variant(BASELINE, device="cpu")
    x = example_input(BASELINE, 1, "cpu")
    keys = set(model.state_dict())
    r = peers._run_thop(model, x)
    assert r.total == 9_322_496
    assert set(model.state_dict()) == keys
    assert not any(hasattr(m, "total_ops") or m._forward_hooks for m in model.modules())


def test_unknown_counter():
    with pytest.raises(UhdProfileError) as e:
        run_peer("ptflops", BASELINE)
    msg = str(e.value)
    assert "'ptflops'" in msg and "fvcore, thop" in msg and "\n" not in msg


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom: shapes disagree\nsecond line of a long story")


@pytest.mark.parametrize("counter", PEER_COUNTERS)
def test_library_failure_is_one_line(monkeypatch, counter):
    monkeypatch.setattr(peers, "build_variant", lambda spec, device="cpu": _Broken())
    with pytest.raises(UhdProfileError) as e:
        run_peer(counter, BASELINE)
    msg = str(e.value)
    assert counter in msg and "boom: shapes disagree" in msg and "second line" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize("counter,module", [("fvcore", "fvcore.nn"), ("thop", "thop")])
def test_missing_package(monkeypatch, counter, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UhdProfileError, match=f"pip install {counter}"):
        run_peer(counter, BASELINE)
