"""Text for training: documents from local files, a HuggingFace hub dataset or the embedded
corpus, split into training and held-out documents, sharded over hosts, tokenized and packed
into seq_len + 1 token windows, batched and prefetched.

The order is fixed by the corpus alone (no shuffling), so a `Position` (epoch, document,
token offset) names the next token exactly and a checkpointed run resumes on the very windows
it would have read. Documents are joined by the tokenizer's end-of-document token and cut into
consecutive windows: every token of the stream lands in exactly one window.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import queue
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import jax
import ml_collections
import numpy as np

from slm_jax.errors import UserError

FORMATS = {".txt": "text", ".md": "text", ".json": "json", ".jsonl": "json",
           ".parquet": "parquet"}
# Packages of the standard library that are tests or vendored copies, not its own prose/code.
_STDLIB_SKIP = {"test", "tests", "idle_test", "idlelib", "site-packages", "lib2to3",
                "ensurepip", "turtledemo", "__pycache__"}
# Documents tokenized per call: large enough for the Rust tokenizer's threads.
_ENCODE_CHUNK = 64


# ---------------------------------------------------------------------------- the documents

@functools.cache
def stdlib_files() -> tuple[Path, ...]:
  """The embedded corpus: every source file of this Python's standard library (tests and
  vendored packages left out), in sorted order. Every machine with Python has it, offline.
  Listed once per process (a second on two cores): the corpus key, both splits and every
  pass over the corpus read the same list."""
  root = Path(sysconfig.get_paths()["stdlib"])
  return tuple(sorted((p for p in root.rglob("*.py")
                       if not _STDLIB_SKIP & set(p.relative_to(root).parts)),
                      key=lambda p: p.relative_to(root).as_posix()))


def data_files(c: ml_collections.ConfigDict) -> list[str]:
  """--config.data_files expanded (comma-separated paths or globs, each sorted; `**` matches
  any depth of folders, as in a shell with globstar)."""
  out = []
  for pattern in (p.strip() for p in c.data_files.split(",")):
    if not pattern:
      continue
    matches = sorted(f for f in glob.glob(pattern, recursive=True) if not Path(f).is_dir())
    if not matches:
      raise UserError(f"--config.data_files: no file matches {pattern!r}")
    out += matches
  return out


def describe(c: ml_collections.ConfigDict) -> str:
  if c.dataset:
    return f"hub dataset {c.dataset} ({c.dataset_split})"
  if c.data_files:
    return f"files {c.data_files}"
  return f"embedded corpus: Python {sys.version.split()[0]} standard library source"


def corpus_key(c: ml_collections.ConfigDict) -> str:
  """Identifies the text a tokenizer was trained on: names, sizes and times of its files."""
  if c.dataset:
    return f"hub:{c.dataset}:{c.dataset_split}:{c.text_field}"
  files = [Path(f) for f in data_files(c)] if c.data_files else stdlib_files()
  h = hashlib.sha256(f"{c.data_format}:{c.text_field}".encode())
  for f in files:
    st = f.stat()
    h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
  return h.hexdigest()


def _format(files: list[str], fmt: str) -> str:
  if fmt:
    return fmt
  kinds = {FORMATS.get(Path(f).suffix.lower()) for f in files}
  if len(kinds) != 1 or None in kinds:
    raise UserError(f"cannot tell the format of {files[:3]} from the extension; set "
                    "--config.data_format to text, json or parquet")
  return kinds.pop()


def documents(c: ml_collections.ConfigDict) -> Iterator[str]:
  """Every document of the corpus once, in its fixed order (empty ones left out)."""
  if not c.dataset and not c.data_files:
    for path in stdlib_files():
      text = path.read_text(encoding="utf-8", errors="replace")
      if text.strip():
        yield text
    return
  import datasets  # slow to import; only runs that read files or the hub pay for it
  datasets.disable_progress_bars()
  # Its loaders log a failure before raising it; the raise becomes our one error: line.
  datasets.logging.set_verbosity(datasets.logging.CRITICAL)
  try:
    if c.dataset:
      ds = datasets.load_dataset(c.dataset, split=c.dataset_split, streaming=True)
      field = c.text_field
    else:
      files = data_files(c)
      fmt = _format(files, c.data_format)
      # A paragraph per document: lines are too short to teach anything across them.
      kw = {"sample_by": "paragraph"} if fmt == "text" else {}
      ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True, **kw)
      field = "text" if fmt == "text" else c.text_field
    for row in ds:
      if field not in row:
        raise UserError(f"--config.text_field={field!r} is not a column of {describe(c)}; "
                        f"it has {sorted(row)}")
      text = row[field]
      if isinstance(text, str) and text.strip():
        yield text
  except UserError:
    raise
  except Exception as e:  # datasets' own errors: offline hub, unreadable file, bad JSON
    raise UserError(f"cannot read {describe(c)}: {type(e).__name__}: {e}") from e


def eval_stride(c: ml_collections.ConfigDict) -> int:
  """Every `eval_stride`-th document is held out; 0 = none (no evaluation asked for)."""
  return max(2, round(1 / c.eval_fraction)) if c.eval_every else 0


def split(docs: Iterator[str], which: str, stride: int, process_index: int = 0,
          process_count: int = 1) -> Iterator[str]:
  """This host's documents of split `which` ("train" or "eval"): held out by position in the
  corpus, then dealt to hosts in turn, so hosts read disjoint documents that cover the split."""
  j = 0
  for i, text in enumerate(docs):
    held_out = bool(stride) and i % stride == stride - 1
    if held_out != (which == "eval"):
      continue
    if j % process_count == process_index:
      yield text
    j += 1


# --------------------------------------------------------------------------------- packing

class Position(NamedTuple):
  """The next token to read: `offset` into document `doc` (this host's numbering within its
  split, end-of-document token included) of pass `epoch` over the corpus."""
  epoch: int = 0
  doc: int = 0
  offset: int = 0


def windows(docs: Callable[[], Iterator[str]], encode: Callable[[list[str]], list],
            eos: int, length: int, start: Position = Position(),
            what: str = "the corpus") -> Iterator[tuple[np.ndarray, Position]]:
  """Endless consecutive `length`-token windows of the documents, each followed by EOS, pass
  after pass; yields (window, position after it). `docs()` restarts the documents."""
  buf, filled = np.empty(length, np.int32), 0
  epoch, skip, offset = start
  while True:
    count = 0
    chunk: list[str] = []

    def drain(first: int):
      nonlocal filled
      for k, ids in enumerate(encode(chunk)):
        d = first + k
        ids = np.append(np.asarray(ids, np.int32), np.int32(eos))
        o = offset if d == skip else 0
        while o < len(ids):
          take = min(length - filled, len(ids) - o)
          buf[filled:filled + take] = ids[o:o + take]
          filled, o = filled + take, o + take
          if filled == length:
            after = Position(epoch, d, o) if o < len(ids) else Position(epoch, d + 1, 0)
            yield buf.copy(), after
            filled = 0

    for text in docs():
      count += 1
      if count <= skip:  # resuming: documents before the position were read already
        continue
      chunk.append(text)
      if len(chunk) == _ENCODE_CHUNK:
        yield from drain(count - len(chunk))
        chunk = []
    if chunk:
      yield from drain(count - len(chunk))
    if count == 0:
      raise UserError(f"{what} has no documents with text")
    epoch, skip, offset = epoch + 1, 0, 0


class Batches:
  """This host's rows of each global batch: `rows` windows -> inputs and targets."""

  def __init__(self, stream: Iterator[tuple[np.ndarray, Position]], rows: int):
    self.stream, self.rows = stream, rows

  def __iter__(self):
    return self

  def __next__(self) -> tuple[dict, Position]:
    ws, pos = [], None
    for _ in range(self.rows):
      w, pos = next(self.stream)
      ws.append(w)
    tokens = np.stack(ws)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, pos


def to_device(batch: dict, sharding: jax.sharding.Sharding) -> dict:
  """A host's rows placed as its part of the global batch array."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class Prefetcher:
  """Reads, packs and places the next batches on a background thread, so the step never
  waits for data; errors surface on the next `next()`."""

  _DONE = object()

  def __init__(self, batches: Iterator[tuple[dict, Position]], sharding, depth: int):
    self._q: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()

    def work():
      try:
        for batch, pos in batches:
          item = (to_device(batch, sharding), pos)
          while not self._stop.is_set():
            try:
              self._q.put(item, timeout=0.1)
              break
            except queue.Full:
              pass
          if self._stop.is_set():
            return
      except BaseException as e:  # handed to the consumer, raised there
        self._q.put(e)
      self._q.put(self._DONE)

    self._thread = threading.Thread(target=work, name="slm_jax-prefetch", daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self) -> tuple[dict, Position]:
    item = self._q.get()
    if isinstance(item, BaseException):
      raise item
    if item is self._DONE:
      raise StopIteration
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join(timeout=5)
