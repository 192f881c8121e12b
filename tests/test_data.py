import json
from pathlib import Path

import numpy as np
import pytest

from slm_jax import config as config_lib
from slm_jax import data, tokenizer
from slm_jax.errors import UserError

TEXTS = ["def f(x):\n    return x  # plain ASCII", "naïve café — ünïcödé ✓ 🚀", "",
         "  leading and trailing spaces  \n\n", "tabs\tand\r\nwindows lines", "x" * 500]


def corpus(n=40, seed=0):
  """Documents of varied length built from the standard library's own source."""
  rng = np.random.default_rng(seed)
  words = data.stdlib_files()[0].read_text().split()
  return [" ".join(words[int(s):int(s) + int(k)])
          for s, k in zip(rng.integers(0, len(words) - 400, n), rng.integers(1, 400, n))]


@pytest.fixture(scope="module")
def bpe():
  return tokenizer.train_bpe(corpus(200), 400)


def test_bpe_trains_at_the_vocab_size_and_round_trips(bpe):
  assert bpe.get_vocab_size() == 400
  assert tokenizer.eos_id(bpe) == bpe.token_to_id(tokenizer.EOS)
  for text in TEXTS + corpus(5, seed=1):
    ids = bpe.encode(text, add_special_tokens=False).ids
    assert bpe.decode(ids) == text and max(ids, default=0) < 400
  # Merges were learnt: common code compresses below one token per byte.
  sample = corpus(5, seed=2)[0]
  assert len(bpe.encode(sample).ids) < 0.6 * len(sample.encode())


def test_the_cached_bpe_is_trained_once(tmp_path):
  calls = []

  def texts():
    calls.append(1)
    return iter(corpus(20))

  tok, path = tokenizer.cached_bpe(tmp_path, "corpus-a", 300, texts)
  tok2, path2 = tokenizer.cached_bpe(tmp_path, "corpus-a", 300, texts)
  _, path3 = tokenizer.cached_bpe(tmp_path, "corpus-b", 300, texts)
  assert path == path2 != path3 and len(calls) == 2
  assert tok.to_str() == tok2.to_str()


def test_a_tokenizer_larger_than_the_vocabulary_is_a_user_error(bpe, tmp_path):
  bpe.save(str(tmp_path / "tok.json"))
  with pytest.raises(UserError, match="has 400 tokens but the model's vocabulary is 256"):
    tokenizer.load(tmp_path / "tok.json", 256)
  assert tokenizer.load(tmp_path / "tok.json", 512).get_vocab_size() == 400
  with pytest.raises(UserError, match="no such file"):
    tokenizer.load(tmp_path / "nope.json", 512)


def stream_of(docs, encode, eos):
  return np.concatenate([np.asarray(encode([d])[0] + [eos], np.int32) for d in docs])


@pytest.mark.parametrize("hosts", [1, 3])
def test_windows_are_the_token_stream_cut_up_across_hosts(bpe, hosts):
  docs = [d for d in corpus(30) if d]
  eos, length = tokenizer.eos_id(bpe), 65

  def encode(texts):
    return [e.ids for e in bpe.encode_batch(texts, add_special_tokens=False)]

  seen = []
  for h in range(hosts):
    mine = list(data.split(iter(docs), "train", 0, h, hosts))
    seen += mine
    expected = stream_of(mine, encode, eos)
    n = 2 * len(expected) // length + 1  # two passes and a bit: windows straddle the epoch
    ws = [w for w, _ in zip(data.windows(lambda: data.split(iter(docs), "train", 0, h, hosts),
                                         encode, eos, length), range(n))]
    got = np.concatenate([w for w, _ in ws])
    assert all(len(w) == length for w, _ in ws)
    np.testing.assert_array_equal(got, np.tile(expected, 3)[:len(got)])
  assert sorted(seen) == sorted(docs)  # every document on exactly one host


def test_held_out_documents_never_reach_training():
  docs = [f"doc {i}" for i in range(100)]
  train = list(data.split(iter(docs), "train", 20))
  held = list(data.split(iter(docs), "eval", 20))
  assert len(held) == 5 and not set(train) & set(held) and len(train) + len(held) == 100


def test_resuming_at_a_saved_position_reads_the_same_windows(bpe):
  docs = corpus(6)
  eos = tokenizer.eos_id(bpe)

  def encode(texts):
    return [e.ids for e in bpe.encode_batch(texts, add_special_tokens=False)]

  def windows(start=data.Position()):
    return data.windows(lambda: iter(docs), encode, eos, 33, start)

  straight = [x for x, _ in zip(windows(), range(400))]
  for k in (0, 7, 150, 398):  # the later ones are in later passes
    resumed = [w for w, _ in zip(windows(straight[k][1]), range(400 - k - 1))]
    for (a, _), (b, _) in zip(resumed, straight[k + 1:]):
      np.testing.assert_array_equal(a, b)
  assert straight[-1][1].epoch >= 1


def test_batches_shift_targets_by_one():
  stream = ((np.arange(i, i + 9, dtype=np.int32), data.Position(0, i, 0)) for i in range(10))
  batch, pos = next(data.Batches(stream, 2))
  np.testing.assert_array_equal(batch["inputs"][1], np.arange(1, 9))
  np.testing.assert_array_equal(batch["targets"][1], np.arange(2, 10))
  assert pos == data.Position(0, 1, 0)


def cfg(**kw):
  c = config_lib.tiny_config()
  c.update(kw)
  return c


def test_local_text_and_json_files_are_read_in_order(tmp_path):
  (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n")
  with open(tmp_path / "b.jsonl", "w") as f:
    for i in range(3):
      f.write(json.dumps({"body": f"json doc {i}", "n": i}) + "\n")
  assert [d.strip() for d in data.documents(cfg(data_files=str(tmp_path / "*.txt")))] == [
      "first paragraph\nstill first", "second paragraph"]
  assert list(data.documents(cfg(data_files=str(tmp_path / "b.jsonl"), text_field="body"))) == [
      "json doc 0", "json doc 1", "json doc 2"]
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"text": ["pq one", "pq two"]}), tmp_path / "c.parquet")
  assert list(data.documents(cfg(data_files=str(tmp_path / "c.parquet")))) == ["pq one", "pq two"]
  with pytest.raises(UserError, match="'text' is not a column"):
    list(data.documents(cfg(data_files=str(tmp_path / "b.jsonl"))))


def test_a_double_star_glob_reaches_files_at_any_depth_and_skips_folders(tmp_path):
  for rel in ("top.txt", "a/mid.txt", "a/b/deep.txt", "a/b/other.md", "a/dir.txt/inner.txt"):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(rel)
  found = data.data_files(cfg(data_files=str(tmp_path / "**" / "*.txt")))
  assert [Path(f).relative_to(tmp_path).as_posix() for f in found] == [
      "a/b/deep.txt", "a/dir.txt/inner.txt", "a/mid.txt", "top.txt"]


def test_missing_files_and_empty_corpora_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="no file matches"):
    data.data_files(cfg(data_files=str(tmp_path / "missing*.txt")))
  (tmp_path / "empty.txt").write_text("\n\n  \n")
  docs = lambda: data.documents(cfg(data_files=str(tmp_path / "empty.txt")))  # noqa: E731
  with pytest.raises(UserError, match="has no documents with text"):
    next(data.windows(docs, lambda t: [[1]] * len(t), 0, 9))


def test_the_embedded_corpus_is_the_stdlib_in_a_fixed_order():
  files = data.stdlib_files()
  assert len(files) > 100 and files == data.stdlib_files()
  assert not any("test" in p.parts for p in files)
  first = next(data.documents(cfg()))
  assert first == files[0].read_text(encoding="utf-8", errors="replace")


def test_the_cached_encoder_matches_the_tokenizer_and_keeps_to_its_cap(bpe):
  docs = corpus(12, seed=3)
  plain = [bpe.encode(d, add_special_tokens=False).ids for d in docs]
  enc = tokenizer.CachedEncoder(bpe, max_tokens=sum(map(len, plain[:5])))
  for _ in range(2):  # the second pass is served from the cache where it could keep them
    assert [list(x) for x in enc(docs)] == plain
  assert set(enc.cache) == set(docs[:5]) and enc.cached_tokens <= enc.max_tokens
