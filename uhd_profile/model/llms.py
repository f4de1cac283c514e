"""LLM presets: the language models that read the visual tokens, built like the vision towers.

Every preset builds a ``transformers`` causal LM (``*ForCausalLM``: decoder stack, final norm, LM
head) from its config class with random weights (FLOPs, latency and memory do not depend on weight
values), on any device (``"meta"`` for counting: shapes only, nothing materialised), or from a
local checkpoint directory (``weights=DIR``, local files only). Nothing is ever downloaded.

Where each preset's numbers come from (``LlmSpec.sources`` says it per preset):

* ``qwen3-8b``: Qwen3-8B's released ``config.json`` (the LLaVA-UHD v4 paper's LLM).
* ``llama-2-7b``: Llama-2-7B / Vicuna-7B v1.5 ``config.json`` (identical geometry; LLaVA-1.5-7B's LLM).
* ``qwen2.5-7b``: the text model of Qwen2.5-VL-7B-Instruct's ``config.json``.
* ``minicpm-v-4.6-llm``: exactly the text model ``transformers``' ``MiniCPMV4_6Config()`` ships by
  default (a ``Qwen3_5TextConfig``); a test pins the preset to those defaults. The *released*
  MiniCPM-V 4.6 checkpoint uses a much smaller LLM; see the preset's description and
  ``llm_spec_from_config`` to count that one from its own ``config.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uhd_profile.errors import UhdProfileError

if TYPE_CHECKING:  # torch (and the trunks, which import it) only where a model is built
    import torch

FAMILIES: dict[str, tuple[str, str]] = {
    # family -> (config class, causal-LM class), both importable from ``transformers``
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "qwen3_5": ("Qwen3_5TextConfig", "Qwen3_5ForCausalLM"),
}

ATTN_BACKENDS = ("sdpa", "eager")
FULL, LINEAR = "full_attention", "linear_attention"


@dataclass(frozen=True)
class LlmSpec:
    """Geometry of one decoder-only LLM (widths in elements, counts in units).

    ``layers`` decoder layers; ``hidden`` model width d; ``mlp`` MLP hidden width m; ``heads`` query
    heads; ``kv_heads`` key/value heads (GQA when fewer than ``heads``); ``head_dim`` per-head width
    e (queries, keys and values); ``vocab`` vocabulary size (LM head outputs); ``mlp_kind`` the MLP
    (``"swiglu"``: gate, up and down projections, three matrices); ``family`` the ``transformers``
    architecture (see ``FAMILIES``).

    Attention details: ``qkv_bias`` (Qwen2: biases on q/k/v, not o); ``qk_norm`` (Qwen3, Qwen3.5:
    RMSNorm over each head of q and k); ``attn_output_gate`` (Qwen3.5: q_proj emits 2·heads·e, half
    of it a sigmoid gate on the attention output).

    Hybrid models (Qwen3.5) list ``layer_types`` (``"full_attention"`` or ``"linear_attention"``
    per layer; ``()`` means all full attention). A linear-attention layer is a gated delta net with
    ``linear_k_heads`` x ``linear_k_dim`` query/key heads, ``linear_v_heads`` x ``linear_v_dim``
    value heads, and a depthwise causal conv of ``conv_kernel`` taps over q, k and v.

    ``tied_embeddings``: the LM head shares the input embedding matrix (compute is the same).
    ``full_layers``: on a reduced-depth copy (``reduced``), the depth of the preset it was cut from.
    ``sources``: where the numbers come from.
    """

    name: str
    family: str
    layers: int
    hidden: int
    mlp: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    description: str
    sources: str
    mlp_kind: str = "swiglu"
    tied_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    attn_output_gate: bool = False
    layer_types: tuple[str, ...] = ()
    linear_k_heads: int = 0
    linear_v_heads: int = 0
    linear_k_dim: int = 0
    linear_v_dim: int = 0
    conv_kernel: int = 0
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    partial_rotary: float = 1.0
    mrope_section: tuple[int, ...] = ()
    max_positions: int = 32768
    full_layers: int | None = None

    # -- geometry -----------------------------------------------------------------------------
    @property
    def types(self) -> tuple[str, ...]:
        """Layer type of every layer (``"full_attention"`` / ``"linear_attention"``)."""
        return self.layer_types or (FULL,) * self.layers

    @property
    def attention_layers(self) -> tuple[int, ...]:
        """Indices of the softmax-attention (KV-cached) layers."""
        return tuple(i for i, t in enumerate(self.types) if t == FULL)

    @property
    def hybrid(self) -> bool:
        return LINEAR in self.types

    @property
    def kv_width(self) -> int:
        """Elements one token adds to one attention layer's cache, K and V together (2·kv·e)."""
        return 2 * self.kv_heads * self.head_dim

    # -- building ---------------------------------------------------------------------------------
    def config(self, attn: str = "sdpa"):
        """The ``transformers`` config of this geometry (``attn``: ``"sdpa"`` or ``"eager"``)."""
        from uhd_profile.model.trunks import hf_geometry

        check_attn(attn)
        import transformers

        cls = getattr(transformers, FAMILIES[self.family][0])
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        kw = dict(
            vocab_size=self.vocab,
            **hf_geometry(self),
            num_key_value_heads=self.kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_positions,
            tie_word_embeddings=self.tied_embeddings,
            attention_bias=False,
        )
        if self.family == "qwen3_5":
            rope["partial_rotary_factor"] = self.partial_rotary
            if self.mrope_section:
                rope["mrope_section"] = list(self.mrope_section)
            kw.update(layer_types=list(self.types), **{hf: getattr(self, ours) for ours, hf in _LINEAR_ATTENTION_NAMES.items()})
        if self.family == "qwen2":
            kw.pop("attention_bias")  # Qwen2 hard-codes its q/k/v biases
        cfg = cls(rope_parameters=rope, **kw)
        cfg._attn_implementation = attn
        return cfg

    def build(
        self,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        attn: str = "sdpa",
        dtype: torch.dtype | None = None,
    ) -> Any:
        """The causal LM in eval mode on ``device`` (``"meta"``: shapes only), random weights from
        ``config()``, or a local checkpoint (``weights``) whose geometry must match this spec (a
        reduced-depth spec loads only its first ``layers`` layers). ``dtype`` defaults to fp32."""
        import torch
        import transformers

        from uhd_profile.model.trunks import check_weights_dir, load_pretrained

        cls = getattr(transformers, FAMILIES[self.family][1])
        if weights is None:
            with torch.device(device), _default_dtype(dtype):
                model = cls(self.config(attn))
            return model.eval()
        check_attn(attn)
        path = check_weights_dir(weights, "weights")
        if torch.device(device).type == "meta":
            raise UhdProfileError(
                f"weights={path!r} with device='meta': counting needs no weights; drop weights or pick a real device"
            )
        found = llm_spec_from_config(path)
        diff = geometry_differences(found, self, depth=False)
        if not diff and found.types[: self.layers] != self.types:
            diff = "layer types differ"
        if not diff and found.layers != (self.full_layers or self.layers):
            diff = f"layers {found.layers} != {self.full_layers or self.layers}"
        if diff:
            raise UhdProfileError(
                f"checkpoint {path!r} does not have {self.name}'s geometry ({diff}); "
                f"use llm_spec_from_config({path!r}) to count it as it is"
            )
        override: dict[str, Any] = {"num_hidden_layers": self.layers}
        if self.layer_types:
            override["layer_types"] = list(self.types)
        model = load_pretrained(cls, path, "weights", attn_implementation=attn, dtype=dtype or torch.float32, **override)
        return model.to(device).eval()

    def reduced(self, n: int) -> LlmSpec:
        """A copy with only the first ``n`` decoder layers (embeddings, final norm and LM head
        kept), for timing on a CPU; ``full_layers`` remembers the original depth."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.layers:
            raise UhdProfileError(f"reduced depth {n!r} for {self.name}: must be an integer from 1 to {self.layers}")
        return dataclasses.replace(
            self,
            name=f"{self.name}[:{n}]",
            layers=n,
            layer_types=self.types[:n] if self.layer_types else (),
            full_layers=self.full_layers or self.layers,
        )


def check_attn(attn: str) -> None:
    if attn not in ATTN_BACKENDS:
        raise UhdProfileError(f"unknown attention backend {attn!r}; valid: {', '.join(ATTN_BACKENDS)}")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Build parameters directly in ``dtype`` (an 8B LM head in fp32 then cast would need twice
    the memory)."""
    if dtype is None:
        yield
        return
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


_LINEAR_ATTENTION_NAMES = {
    # LlmSpec field -> the Qwen3.5 text config's name for it
    "linear_k_heads": "linear_num_key_heads",
    "linear_v_heads": "linear_num_value_heads",
    "linear_k_dim": "linear_key_head_dim",
    "linear_v_dim": "linear_value_head_dim",
    "conv_kernel": "linear_conv_kernel_dim",
}

_GEOMETRY_FIELDS = (
    "family",
    "layers",
    "layer_types",
    "hidden",
    "mlp",
    "heads",
    "kv_heads",
    "head_dim",
    "vocab",
    "qkv_bias",
    "qk_norm",
    "attn_output_gate",
    "linear_k_heads",
    "linear_v_heads",
    "linear_k_dim",
    "linear_v_dim",
    "conv_kernel",
)


def geometry_differences(a: LlmSpec, b: LlmSpec, depth: bool = True) -> str:
    """``"field a != b; ..."`` for every geometry field that differs (empty when the cost is the
    same); ``depth=False`` leaves the number and types of layers out."""
    out = []
    for f in _GEOMETRY_FIELDS:
        if f in ("layers", "layer_types"):
            if depth and (a.layers != b.layers or a.types != b.types):
                out.append(f"layers {a.layers} != {b.layers}" if a.layers != b.layers else "layer types differ")
            continue
        x, y = getattr(a, f), getattr(b, f)
        if x != y:
            out.append(f"{f} {x} != {y}")
    return "; ".join(dict.fromkeys(out))


_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_5_text": "qwen3_5", "qwen2_5_vl_text": "qwen2"}


def llm_spec_from_config(path: str | os.PathLike, name: str | None = None) -> LlmSpec:
    """An ``LlmSpec`` read from a local checkpoint's ``config.json`` (a plain causal LM, or a VLM
    whose ``text_config`` is one of the supported families). Local files only."""
    from uhd_profile.model.trunks import check_weights_dir

    p = check_weights_dir(path, "weights")
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UhdProfileError(f"config of {p!r} could not be read: {str(exc).splitlines()[0]}") from None
    text = getattr(cfg, "text_config", None) or cfg
    family = _MODEL_TYPES.get(str(getattr(text, "model_type", "")))
    if family is None:
        raise UhdProfileError(
            f"{p!r}: text model type {getattr(text, 'model_type', None)!r} is not supported; supported: {', '.join(_MODEL_TYPES)}"
        )
    rope = dict(getattr(text, "rope_parameters", None) or {})
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    types = tuple(getattr(text, "layer_types", None) or ())
    kw = {}
    if family == "qwen3_5":
        kw = dict(
            layer_types=types,
            **{ours: getattr(text, hf) for ours, hf in _LINEAR_ATTENTION_NAMES.items()},
            partial_rotary=float(rope.get("partial_rotary_factor", 1.0)),
            mrope_section=tuple(rope.get("mrope_section", ()) or ()),
        )
    tied = bool(getattr(cfg, "tie_word_embeddings", False) or getattr(text, "tie_word_embeddings", False))
    return LlmSpec(
        name=name or os.path.basename(os.path.normpath(p)),
        family=family,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        mlp=text.intermediate_size,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        description=f"read from {p}/config.json",
        sources=f"{p}/config.json",
        tied_embeddings=tied,
        qkv_bias=family == "qwen2",
        qk_norm=family in ("qwen3", "qwen3_5"),
        attn_output_gate=family == "qwen3_5",
        rms_norm_eps=float(getattr(text, "rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        max_positions=int(getattr(text, "max_position_embeddings", 32768)),
        **kw,
    )


def _hybrid_types(layers: int, every: int) -> tuple[str, ...]:
    """Qwen3.5's pattern: every ``every``-th layer is full attention, the rest linear."""
    return tuple(FULL if (i + 1) % every == 0 else LINEAR for i in range(layers))


def _qwen3_5_hybrid(layers: int, every: int, k_heads: int, v_heads: int, head_dim: int) -> dict[str, Any]:
    """A Qwen3.5 preset's architecture fields: qk-norm, gated attention output, partial RoPE 0.25,
    and ``_hybrid_types(layers, every)`` whose linear-attention layers are gated delta nets of
    ``k_heads`` query/key and ``v_heads`` value heads, all of ``head_dim``, conv kernel 4."""
    return dict(
        qk_norm=True,
        attn_output_gate=True,
        layer_types=_hybrid_types(layers, every),
        linear_k_heads=k_heads,
        linear_v_heads=v_heads,
        linear_k_dim=head_dim,
        linear_v_dim=head_dim,
        conv_kernel=4,
        partial_rotary=0.25,
    )


_PRESETS = [
    LlmSpec(
        "qwen3-8b",
        "qwen3",
        36,
        4096,
        12288,
        32,
        8,
        128,
        151936,
        "Qwen3-8B: the LLaVA-UHD v4 paper's LLM (GQA 32/8, qk-norm, untied LM head) (default)",
        "Qwen/Qwen3-8B config.json: hidden_size 4096, intermediate_size 12288, num_hidden_layers 36, "
        "num_attention_heads 32, num_key_value_heads 8, head_dim 128, vocab_size 151936, "
        "tie_word_embeddings false, rope_theta 1e6, rms_norm_eps 1e-6, max_position_embeddings 40960; "
        "qk-norm is part of the Qwen3 architecture (q_norm/k_norm in Qwen3Attention)",
        qk_norm=True,
        rope_theta=1e6,
        max_positions=40960,
    ),
    LlmSpec(
        "llama-2-7b",
        "llama",
        32,
        4096,
        11008,
        32,
        32,
        128,
        32000,
        "Llama-2-7B geometry = Vicuna-7B v1.5, LLaVA-1.5-7B's LLM (MHA, untied LM head)",
        "meta-llama/Llama-2-7b-hf and lmsys/vicuna-7b-v1.5 config.json: hidden_size 4096, "
        "intermediate_size 11008, 32 layers, 32 heads, 32 key/value heads, vocab_size 32000, "
        "rms_norm_eps 1e-5, max_position_embeddings 4096, untied",
        rms_norm_eps=1e-5,
        max_positions=4096,
    ),
    LlmSpec(
        "qwen2.5-7b",
        "qwen2",
        28,
        3584,
        18944,
        28,
        4,
        128,
        152064,
        "Qwen2.5-7B, the LLM of Qwen2.5-VL-7B (GQA 28/4, q/k/v biases, untied LM head); "
        "1-D RoPE in place of M-RoPE (same ops per token)",
        "Qwen/Qwen2.5-VL-7B-Instruct config.json (text fields): hidden_size 3584, intermediate_size "
        "18944, 28 layers, 28 heads, 4 key/value heads (head_dim 3584/28 = 128), vocab_size 152064, "
        "rope_theta 1e6, rms_norm_eps 1e-6, untied; q/k/v biases are part of the Qwen2 architecture. "
        "The released model's M-RoPE (mrope_section [16, 24, 24]) only changes which position each "
        "rotary frequency reads; built here as Qwen2ForCausalLM with 1-D RoPE",
        qkv_bias=True,
        rope_theta=1e6,
        max_positions=128000,
    ),
    LlmSpec(
        "minicpm-v-4.6-llm",
        "qwen3_5",
        32,
        4096,
        12288,
        16,
        4,
        256,
        248320,
        "the text model transformers' MiniCPMV4_6Config ships by default: Qwen3.5 hybrid, 24 gated-"
        "delta-net linear-attention layers + 8 full-attention layers (every 4th), gated attention "
        "output, qk-norm, partial RoPE 0.25. NOT the released MiniCPM-V 4.6 LLM (a ~0.8B Qwen3.5 "
        "with hidden 1024, MLP 3584, tied embeddings): count that one with llm_spec_from_config(DIR)",
        "transformers 5.24 MiniCPMV4_6Config().text_config (Qwen3_5TextConfig defaults): hidden_size "
        "4096, intermediate_size 12288, 32 layers, layer_types 3 linear : 1 full, 16 heads, 4 key/value "
        "heads, head_dim 256, vocab_size 248320, linear attention 16 key heads x 128, 32 value heads x "
        "128, conv kernel 4, rope_theta 1e4, partial_rotary_factor 0.25, untied. Released checkpoint "
        "(openbmb/MiniCPM-V-4.6 config.json): text hidden_size 1024, intermediate_size 3584, head_dim "
        "256, same 3:1 layer pattern, tie_word_embeddings true",
        **_qwen3_5_hybrid(32, 4, k_heads=16, v_heads=32, head_dim=128),
    ),
    LlmSpec(
        "tiny-llm",
        "qwen3",
        3,
        64,
        128,
        4,
        2,
        16,
        512,
        "tiny Qwen3-style LLM for tests (3 layers, d 64, GQA 4/2, qk-norm)",
        "made up for tests",
        qk_norm=True,
    ),
    LlmSpec(
        "tiny-hybrid-llm",
        "qwen3_5",
        4,
        64,
        128,
        4,
        2,
        32,
        512,
        "tiny Qwen3.5-style hybrid LLM for tests (linear, full, linear, full attention)",
        "made up for tests",
        mrope_section=(2, 1, 1),
        **_qwen3_5_hybrid(4, 2, k_heads=2, v_heads=4, head_dim=16),
    ),
]

LLMS: dict[str, LlmSpec] = {s.name: s for s in _PRESETS}
DEFAULT_LLM = "qwen3-8b"


def get_llm(name: str) -> LlmSpec:
    """The preset called ``name``; a one-line error listing the valid names otherwise."""
    if name not in LLMS:
        raise UhdProfileError(f"unknown LLM {name!r}; valid LLMs: {', '.join(LLMS)}")
    return LLMS[name]
