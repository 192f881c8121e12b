"""Text to token ids with HuggingFace `tokenizers`: the user's tokenizer.json, or a byte-level
BPE trained on the corpus at the model's vocabulary size and cached by corpus and size.

Byte-level BPE needs no unknown token: every string round-trips through encode and decode.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from slm_jax.errors import UserError

EOS = "<|endoftext|>"
# The document separator under the names common tokenizers give it; the first found is used.
EOS_NAMES = (EOS, "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")
# Text beyond this trains the BPE no better for a small vocabulary and only costs time.
TRAIN_CHARS = 200_000_000


def eos_id(tok: Tokenizer) -> int:
  for name in EOS_NAMES:
    i = tok.token_to_id(name)
    if i is not None:
      return i
  raise UserError(f"the tokenizer has no end-of-document token (one of {list(EOS_NAMES)}); "
                  "documents are packed with it as the separator")


def check_vocab(tok: Tokenizer, vocab_size: int, source: str) -> None:
  """Ids must index the embedding: a tokenizer larger than vocab_size cannot be served."""
  n = tok.get_vocab_size(with_added_tokens=True)
  if n > vocab_size:
    raise UserError(f"{source} has {n:,} tokens but the model's vocabulary is "
                    f"{vocab_size:,}; set --config.vocab_size={n} or use another tokenizer")


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """A byte-level BPE with `vocab_size` tokens at most (fewer if the text has fewer merges)."""
  if vocab_size < 257:
    raise UserError(f"a byte-level BPE needs --config.vocab_size >= 257 (256 bytes and "
                    f"{EOS}), got {vocab_size}")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)

  def capped():
    total = 0
    for t in texts:
      yield t
      total += len(t)
      if total >= TRAIN_CHARS:
        return

  tok.train_from_iterator(capped(), trainer=trainer)
  return tok


def load(path: str | os.PathLike, vocab_size: int) -> Tokenizer:
  path = Path(path)
  if not path.is_file():
    raise UserError(f"--config.tokenizer_path={str(path)!r}: no such file")
  try:
    tok = Tokenizer.from_file(str(path))
  except Exception as e:  # tokenizers raises plain Exceptions for malformed JSON
    raise UserError(f"--config.tokenizer_path={str(path)!r} is not a tokenizer.json: {e}") from e
  check_vocab(tok, vocab_size, f"--config.tokenizer_path={str(path)!r}")
  eos_id(tok)
  return tok


def cached_bpe(cache_dir: Path, corpus_key: str, vocab_size: int,
               texts: Callable[[], Iterable[str]], is_writer: bool = True,
               barrier: Callable[[], None] = lambda: None) -> tuple[Tokenizer, Path]:
  """The BPE for (corpus, vocab_size) from `cache_dir`, trained on `texts()` by the writer
  process on first use; every process waits at `barrier` and then reads the same file."""
  digest = hashlib.sha256(corpus_key.encode()).hexdigest()[:16]
  path = cache_dir / f"bpe-v{vocab_size}-{digest}.json"
  if is_writer and not path.exists():
    tok = train_bpe(texts(), vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, path)  # a reader never sees half a file
  barrier()
  return Tokenizer.from_file(str(path)), path


class CachedEncoder:
  """Texts -> id arrays, keeping the ids of the first `max_tokens` tokens it sees: a corpus
  that small is tokenized once rather than on every pass (a run reads the embedded corpus
  dozens of times), and a larger one costs no more than uncached."""

  def __init__(self, tok: Tokenizer, max_tokens: int = 100_000_000):
    self.tok, self.max_tokens = tok, max_tokens
    self.cache: dict[str, np.ndarray] = {}
    self.cached_tokens = 0

  def __call__(self, texts: list[str]) -> list[np.ndarray]:
    missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
    fresh = {}
    for text, enc in zip(missing, self.tok.encode_batch(missing, add_special_tokens=False)):
      fresh[text] = ids = np.asarray(enc.ids, np.int32)
      if self.cached_tokens + len(ids) <= self.max_tokens:
        self.cache[text] = ids
        self.cached_tokens += len(ids)
    return [self.cache.get(t, fresh.get(t)) for t in texts]
