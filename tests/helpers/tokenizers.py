"""The packaged MiniLM tokenizer, loaded once per process (tests, fixtures and benchmarks)."""

from __future__ import annotations

import functools

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from qa_lightning.paths import minilm_dir


@functools.cache
def minilm_tokenizer() -> PreTrainedTokenizerBase:
    """MiniLM's fast WordPiece tokenizer (uncased): the real tokenizer of the embedded default.

    Shared: callers must not change its settings (``padding_side`` ...); load a fresh copy for that.
    """
    return AutoTokenizer.from_pretrained(minilm_dir())
