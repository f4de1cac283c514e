"""Real ``transformers`` processors for the policy tests, built offline.

``tiny_tokenizer(specials)`` is a word-level fast tokenizer that knows only the given special
tokens (plus a few words), enough for a processor to write its placeholder ids into
``input_ids``; ``count_ids(batch, token)`` counts a token's ids there. No hub access: processors
are built from their classes with the released configuration values, e.g.
``Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tiny_tokenizer([...]))``.
"""

from __future__ import annotations

from typing import Any


def tiny_tokenizer(specials: list[str], keep_newlines: bool = False, **named: str) -> Any:
    """A ``PreTrainedTokenizerFast`` whose vocabulary is ``specials`` (added as special tokens, each
    one id) plus ``[UNK]``, ``[PAD]`` and a handful of words; ``named`` sets attributes such as
    ``image_token="<|image_pad|>"`` that some processors read from their tokenizer.
    ``keep_newlines``: split on spaces only, so a ``"\n"`` the processor writes (MiniCPM-V's row
    separators) stays a token to count."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "describe", "the", "image", "frame", "from", "at", "seconds", "\n"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if keep_newlines:
        core.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    tok.add_special_tokens({"additional_special_tokens": list(dict.fromkeys(specials))})
    for key, value in named.items():
        setattr(tok, key, value)
    return tok


def count_ids(batch: Any, tokenizer: Any, token: str) -> int:
    """How many times ``token``'s id stands in the first row of ``batch["input_ids"]``."""
    tid = tokenizer.convert_tokens_to_ids(token)
    return (
        int((batch["input_ids"][0] == tid).sum()) if hasattr(batch["input_ids"][0], "sum") else batch["input_ids"][0].count(tid)
    )


def build_processor(cls: Any, **parts: Any) -> Any:
    """``cls(**parts)`` (image processor, tokenizer, ...), built offline. The video processors of
    ``transformers`` need torchvision, which this project does not install beside its torch build:
    a processor that declares one gets None or a stand-in with the attributes its ``__init__``
    reads (``video_processor=SimpleNamespace(...)``; no video is processed), and the class check
    that would look the real class up is skipped for that argument in this one construction."""
    import transformers.processing_utils as pu

    original = pu.ProcessorMixin.check_argument_for_proper_class

    def check(self: Any, name: str, arg: Any) -> Any:
        if "video" in name:
            return None
        return original(self, name, arg)

    pu.ProcessorMixin.check_argument_for_proper_class = check  # type: ignore[method-assign]
    try:
        return cls(**{"chat_template": None, **parts})
    finally:
        pu.ProcessorMixin.check_argument_for_proper_class = original  # type: ignore[method-assign]


#: Edge sizes around 448 px tiles shared by the tiling families' tests (InternVL, MiniCPM-V, Phi-4-MM):
#: tiny, thin both ways, one tile and one pixel past it, 2:1, square, 1080p, 4K both ways, huge.
EDGE_SIZES_448: list[tuple[int, int]] = [
    (1, 1),
    (5, 3),
    (30, 400),
    (400, 30),
    (1, 20),
    (20, 1),
    (448, 448),
    (449, 448),
    (896, 448),
    (1000, 1000),
    (1920, 1080),
    (3840, 2160),
    (2160, 3840),
    (8000, 6000),
    (8000, 400),
    (400, 8000),
]


def sampled_sizes(
    n: int,
    seed: int,
    min_log_area: float = 0.0,
    max_log_area: float = 7.7,
    max_side: int = 9000,
    exclude: tuple[tuple[int, int], ...] | list[tuple[int, int]] = (),
) -> list[tuple[int, int]]:
    """``n`` distinct image sizes (width, height) from a seeded generator: log-uniform area from
    10**min_log_area to 10**max_log_area px and aspect ratio from 1:20 to 20:1, sides at most
    ``max_side`` px, none of ``exclude``."""
    import random

    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    while len(out) < n:
        area, ratio = 10 ** rng.uniform(min_log_area, max_log_area), 20 ** rng.uniform(-1, 1)
        w, h = max(1, round((area * ratio) ** 0.5)), max(1, round((area / ratio) ** 0.5))
        if w <= max_side and h <= max_side and (w, h) not in exclude and (w, h) not in out:
            out.append((w, h))
    return out
