"""Real ``transformers`` processors for the policy tests, built offline.

``tiny_tokenizer(specials)`` is a word-level fast tokenizer that knows only the given special
tokens (plus a few words), enough for a processor to write its placeholder ids into
``input_ids``; ``count_ids(batch, token)`` counts a token's ids there. No hub access: processors
are built from their classes with the released configuration values, e.g.
``Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil(), tokenizer=tiny_tokenizer([...]))``.
"""

from __future__ import annotations

from typing import Any


def tiny_tokenizer(specials: list[str], **named: str) -> Any:
    """A ``PreTrainedTokenizerFast`` whose vocabulary is ``specials`` (added as special tokens, each
    one id) plus ``[UNK]``, ``[PAD]`` and a handful of words; ``named`` sets attributes such as
    ``image_token="<|image_pad|>"`` that some processors read from their tokenizer."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "describe", "the", "image", "frame", "from", "at", "seconds", "\n"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
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
    """``cls(**parts)`` (image processor, tokenizer, ...), built offline. A processor that also
    declares a video processor is given None for it when none is passed: the video processors of
    ``transformers`` need torchvision, which this project does not install beside its torch build,
    so the class check that would look that class up is skipped for this one construction."""
    import transformers.processing_utils as pu

    original = pu.ProcessorMixin.check_argument_for_proper_class

    def check(self: Any, name: str, arg: Any) -> Any:
        if arg is None and "video" in name:
            return None
        return original(self, name, arg)

    pu.ProcessorMixin.check_argument_for_proper_class = check  # type: ignore[method-assign]
    try:
        return cls(**{"chat_template": None, **parts})
    finally:
        pu.ProcessorMixin.check_argument_for_proper_class = original  # type: ignore[method-assign]
