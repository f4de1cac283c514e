"""Peer counters: run fvcore or thop on the same variant, so a user can see what they report.

Our own engine (``flops.count_flops``) is the default everywhere; this module exists so that
``uhd-profile flops --counter fvcore|thop`` can show the numbers those libraries give, faithfully,
with what they skip spelled out. Nothing here "fixes" a peer: an op a library does not price is
reported as skipped, not patched in.

Both libraries execute the model on real tensors (fvcore traces it with ``torch.jit.trace``, thop
runs a forward with module hooks), so the variant is built on the CPU with random weights and
really computed once, in eval mode under ``torch.no_grad()``. For the default so400m at 980 px
that is one full forward (tens of seconds on a CPU); our engine counts the same model on ``meta``
tensors in milliseconds.

What each library's number means (checked against our engine on the tiny preset, see
``tests/test_peers.py``):

* fvcore: one fused multiply-add counts 1, but the library calls its unit "flops", so its total
  is a multiply-accumulate count. Linear/matmul/conv are MACs; ``layer_norm`` is priced 5 per
  element (4 without affine). Ops it has no handle for count 0 and are listed in
  ``unsupported_ops``: with torch's SDPA that includes ``aten::scaled_dot_product_attention``
  (all QK^T and AV work), and a Conv2d built with ``padding="valid"`` (SigLIP's patch
  embedding) traces as ``aten::_convolution_mode``, which fvcore has no handle for either.
* thop: ``total_ops`` are MACs for nn.Linear (in_features per output element) and nn.Conv*
  (C_in/groups x kernel per output element), but nn.LayerNorm is priced 2 per element, doubled
  with affine (4 per element). It prices only leaf modules whose exact type it has a rule for;
  anything done functionally in forward code (``F.scaled_dot_product_attention``, matmuls,
  ``F.gelu``, residual adds, position-table interpolation) is invisible to it and is not
  reported by the library at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from uhd_profile.count.flops import module_group
from uhd_profile.errors import UhdProfileError, first_line
from uhd_profile.model.variants import VariantSpec, build_variant, example_input

PEER_COUNTERS: tuple[str, ...] = ("fvcore", "thop")

# Short enough for a table header; the per-op pricing details are in PeerCount.notes.
PEER_UNITS = {
    "fvcore": "MACs, which fvcore calls 'flops'",
    "thop": "MACs (thop's total_ops)",
}

BY_MODULE_GRANULARITY = (
    "by_module: top-level children of the variant, with each numbered layer as its own key "
    "(layers.N), the same groups as FlopCount.grouped(depth=1); '(root)' holds what ran at the "
    "root itself; the values sum to the total"
)

_FVCORE_LOGGERS = ("fvcore", "fvcore.nn.jit_analysis")

# fvcore op names whose absence from the total deserves a plain-words note.
_FVCORE_SKIP_NOTES = {
    "aten::scaled_dot_product_attention": "attention (QK^T and AV of every "
    "aten::scaled_dot_product_attention call) is not counted: fvcore has no handle for SDPA",
    "aten::_convolution_mode": "convolutions with string padding (padding='valid'/'same', e.g. "
    "SigLIP's patch embedding) trace as aten::_convolution_mode, which fvcore has no handle for: "
    "they are not counted",
}


@dataclass
class PeerCount:
    """What one peer library reported for one variant.

    ``unit`` says what the library's number means; ``total`` is the library's own total as an
    int; ``by_module`` its per-module totals (see ``BY_MODULE_GRANULARITY``);
    ``unsupported_ops`` what it skipped (fvcore: ``unsupported_ops()`` op names -> calls; thop:
    leaf module classes it has no rule for -> calls); ``seconds`` wall time of building the
    variant on the CPU and running the library (like ``FlopCount.seconds``).
    """

    counter: str
    unit: str
    total: int
    by_module: dict[str, int] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    variant_id: str | None = None


def check_counter(counter: str) -> None:
    if counter not in PEER_COUNTERS:
        raise UhdProfileError(
            f"unknown counter {counter!r}; valid counters: {', '.join(PEER_COUNTERS)} "
            f"(or leave it out for uhd-profile's own engine)"
        )


def run_peer(counter: str, spec: VariantSpec, batch: int = 1) -> PeerCount:
    """Build ``spec`` on the CPU and count it with the peer library ``counter``."""
    check_counter(counter)
    if batch < 1:
        raise UhdProfileError(f"batch {batch} must be at least 1")
    runner = _run_fvcore if counter == "fvcore" else _run_thop
    _import(counter)  # fail on a missing package before building anything
    t0 = time.perf_counter()
    with torch.no_grad():
        model = build_variant(spec, device="cpu").eval()
        x = example_input(spec, batch, "cpu")
        if not isinstance(x, torch.Tensor):
            raise UhdProfileError(f"{spec.id}: the peer counters take one view; count global/sliced encodings with --counter uhd")
        try:
            result = runner(model, x)
        except UhdProfileError:
            raise
        except Exception as exc:  # the library failed on this model: one line, no traceback
            raise UhdProfileError(f"{counter} failed on {spec.id}: {first_line(exc)}") from None
    result.seconds = time.perf_counter() - t0
    result.variant_id = spec.id
    return result


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _import(counter: str):
    try:
        with warnings.catch_warnings():  # their imports raise DeprecationWarnings (jit, distutils)
            warnings.simplefilter("ignore", DeprecationWarning)
            return _import_quietly(counter)
    except ImportError as exc:
        raise UhdProfileError(
            f"counter {counter!r} needs the {counter} package, which could not be imported "
            f"({first_line(exc)}); install it with: pip install {counter}"
        ) from None


def _import_quietly(counter: str):
    if counter == "fvcore":
        from fvcore.nn import FlopCountAnalysis

        return FlopCountAnalysis
    import thop
    from thop.profile import register_hooks

    return thop.profile, register_hooks


def module_groups(model: nn.Module) -> list[str]:
    """Group keys of ``model``: its direct children, numbered children expanded (``layers.3``)."""
    keys: list[str] = []
    for name, child in model.named_children():
        sub = [n for n, _ in child.named_children()]
        if sub and all(n.isdigit() for n in sub):
            keys.extend(f"{name}.{n}" for n in sub)
        else:
            keys.append(name)
    # must agree with the engine's grouping, so peer and engine rows line up
    return [k for k in keys if module_group(k, 1) == k]


def _with_root(total: int, groups: dict[str, int]) -> dict[str, int]:
    rest = total - sum(groups.values())
    if rest:
        groups["(root)"] = rest
    return groups


@contextlib.contextmanager
def _quiet_fvcore():
    """fvcore logs unsupported ops and uncalled modules at WARNING (stderr), and jit tracing
    emits TracerWarnings; what matters of that is returned in the PeerCount instead."""
    saved = []
    for name in _FVCORE_LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, log.level))
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in saved:
            log.setLevel(level)


# --------------------------------------------------------------------------------------------
# fvcore
# --------------------------------------------------------------------------------------------


def _run_fvcore(model: nn.Module, x: torch.Tensor) -> PeerCount:
    FlopCountAnalysis = _import("fvcore")
    with _quiet_fvcore():
        analysis = FlopCountAnalysis(model, (x,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        total = int(analysis.total())
        per_module = analysis.by_module()
        unsupported = {k: int(v) for k, v in sorted(analysis.unsupported_ops().items())}
        by_op = {k: int(v) for k, v in sorted(analysis.by_operator().items())}
    groups = {k: int(per_module.get(k, 0)) for k in module_groups(model)}
    notes = [
        "fvcore traces the model with torch.jit.trace and counts one fused multiply-add as one "
        "'flop': its total is a multiply-accumulate count, not 2-per-MAC FLOPs",
        "fvcore prices layer_norm at 5 per element (4 without affine); element-wise ops "
        "(adds, activations) have no handle and are listed in unsupported_ops",
        "ops listed in unsupported_ops count 0 in fvcore's total",
        f"fvcore by operator: {', '.join(f'{k}={v}' for k, v in by_op.items()) or 'none'}",
        BY_MODULE_GRANULARITY,
    ]
    notes += [text for op, text in _FVCORE_SKIP_NOTES.items() if op in unsupported]
    return PeerCount(
        counter="fvcore",
        unit=PEER_UNITS["fvcore"],
        total=total,
        by_module=_with_root(total, groups),
        unsupported_ops=unsupported,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# thop
# --------------------------------------------------------------------------------------------


def _run_thop(model: nn.Module, x: torch.Tensor) -> PeerCount:
    profile, register_hooks = _import("thop")
    # thop registers total_ops/total_params buffers on every module and removes them only from
    # modules it has a rule for (and only if the forward succeeds), so snapshot and restore.
    before = {id(m): (set(m._buffers), set(m._forward_hooks)) for m in model.modules()}
    # leaf modules whose exact type thop has no rule for (thop matches type(m), not isinstance):
    # count how often each class runs, since thop prices those calls as 0
    missing: Counter[str] = Counter()
    handles = []
    for m in model.modules():
        if not any(True for _ in m.children()) and type(m) not in register_hooks:
            cls = f"{type(m).__module__}.{type(m).__qualname__}"
            handles.append(m.register_forward_hook(lambda mod, a, o, cls=cls: missing.update([cls])))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ops, _params, info = profile(model, inputs=(x,), verbose=False, ret_layer_info=True)
    finally:
        for h in handles:
            h.remove()
        _restore(model, before)
    total = int(round(ops))
    groups: dict[str, int] = {}
    for key in module_groups(model):
        name, _, idx = key.partition(".")
        entry = info.get(name)
        if entry is not None and idx:
            entry = entry[2].get(idx)
        groups[key] = int(round(entry[0])) if entry is not None else 0
    notes = [
        "thop's total_ops count Linear and Conv as multiply-accumulates (MACs) and LayerNorm at "
        "4 per element (2 per element, doubled with affine)",
        "thop only sees leaf modules whose exact type it has a rule for (nn.Linear, nn.Conv*, "
        "nn.LayerNorm, ...); functional ops in forward code (F.scaled_dot_product_attention, "
        "matmuls, F.gelu, residual adds, position-table interpolation) are invisible to it and "
        "thop does not report them: they are missing from its total and from unsupported_ops",
        "unsupported_ops lists leaf module classes thop has no rule for (calls per class; thop "
        "prices them 0) as found by uhd-profile; thop itself does not report them",
        BY_MODULE_GRANULARITY,
    ]
    return PeerCount(
        counter="thop",
        unit=PEER_UNITS["thop"],
        total=total,
        by_module=_with_root(total, groups),
        unsupported_ops=dict(sorted(missing.items())),
        notes=notes,
    )


def _restore(model: nn.Module, before: dict[int, tuple[set, set]]) -> None:
    """Drop every buffer and forward hook that was not on a module before thop ran."""
    for m in model.modules():
        bufs, hooks = before.get(id(m), (set(), set()))
        for name in [b for b in m._buffers if b not in bufs]:
            del m._buffers[name]
        for key in [k for k in m._forward_hooks if k not in hooks]:
            del m._forward_hooks[key]
            m._forward_hooks_with_kwargs.pop(key, None)
            m._forward_hooks_always_called.pop(key, None)
