"""Corpora and batches: the LJSpeech directory format, a feature cache, train/test
split, length-bucketed epochs, and synthetic LJSpeech-shaped batches for benchmarks.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import itertools
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from common.data import audio, text
from common.contract import weights as W
from common.data.batch import make_batch
from common.contract.spec import Spec

# Spec fields that change the features; model fields (d, c, ...) must not invalidate a cache.
AUDIO_FIELDS = ("sr", "n_fft", "hop", "win", "n_mels", "preemphasis", "features", "gamma", "ref_db", "max_db",
                "top_db")
CACHE_DIRNAME = ".dctts-cache"
BUCKET_CHUNK = 20  # batches sorted by length together (shuffled chunks of this many batches)
INDEX_EVERY_S = 30  # the cache's index is rewritten this often while features are computed
SILENT_PEAK = 1e-4  # [ours] -80 dBFS, 3 steps of 16-bit audio: a wav peaking below this is silent
STALE_TEMP_S = 3600  # a cache's temporary files older than this are leftovers of killed runs
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DataError(ValueError):
    """A corpus that cannot be read."""


class Entry(NamedTuple):
    """One line of metadata.csv: id, the text the model reads, the wav file."""

    id: str
    text: str
    wav: Path


class Utterance(NamedTuple):
    id: str
    text: str
    ids: np.ndarray  # int32, ending with end-of-text
    n_frames: int  # full frame rate


def read_ljspeech(data_dir, metadata: str = "metadata.csv") -> list:
    """[Entry] from an LJSpeech-format directory: metadata.csv lines `id|text|normalized text`
    (pipe-separated, no header, quotes literal) and wavs/<id>.wav. The normalized column is
    used when present and non-empty. `metadata`: another list of the same folder (a held-out
    set, common.data.corpus)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"corpus directory {root} does not exist")
    meta = root / metadata
    if not meta.is_file():
        raise DataError(f"{meta} is missing (an LJSpeech-format corpus has metadata.csv and wavs/)")
    entries, seen = [], set()
    with open(meta, encoding="utf-8", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) not in (2, 3) or not _SAFE_ID.match(row[0]) or not row[1].strip():
                raise DataError(f"{meta}, line {line_no}: expected `id|text|normalized text` with a plain id "
                                f"and a text, got {'|'.join(row)!r}")
            if row[0] in seen:
                raise DataError(f"{meta}, line {line_no}: duplicate id {row[0]!r}")
            seen.add(row[0])
            txt = row[2] if len(row) == 3 and row[2].strip() else row[1]
            entries.append(Entry(row[0], txt, root / "wavs" / f"{row[0]}.wav"))
    if not entries:
        raise DataError(f"{meta} is empty: it lists no utterances")
    missing = [str(e.wav) for e in entries if not e.wav.is_file()]
    if missing:
        raise DataError(f"{len(missing)} wav files listed in {meta} are missing, e.g. {missing[0]}")
    return entries


def audio_key(spec: Spec) -> str:
    """Hash of the spec's audio fields: the name of its feature cache."""
    fields = {k: getattr(spec, k) for k in AUDIO_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class Corpus:
    """Utterances with cached features. items[i].n_frames is the full-rate frame count."""

    def __init__(self, spec: Spec, items: list, cache: Path):
        self.spec, self.items, self.cache = spec, items, cache

    def __len__(self) -> int:
        return len(self.items)

    def features(self, i: int) -> tuple:
        """(mel (F, T), mag (F', T)) float32 at full frame rate."""
        uid = self.items[i].id
        return np.load(self.cache / f"{uid}.mel.npy"), np.load(self.cache / f"{uid}.mag.npy")


def unwritable(path) -> str | None:
    """Why `path` (a file or folder to create, or to overwrite) cannot be written, or None:
    asked before long work, not after."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        return f"{existing} is not a directory"
    return None if os.access(existing, os.W_OK) else f"permission denied on {existing}"


def corpus_cache(data_dir, base=None) -> Path:
    """The folder of a corpus's feature caches: <base>/<corpus folder name>-<hash of its
    resolved path> when a base is given; else <data_dir>/.dctts-cache where that can be
    written, else (a read-only corpus) the same under the user's cache folder, said in a warning."""
    if base is None:
        default = Path(data_dir) / CACHE_DIRNAME
        reason = unwritable(default)
        if reason is None:
            return default
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dctts-bench"
        warnings.warn(f"{data_dir} is not writable ({reason}): feature cache in {corpus_cache(data_dir, base)}",
                      stacklevel=3)
    resolved = Path(data_dir).resolve()
    return Path(base) / f"{resolved.name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def load_corpus(data_dir, spec: Spec, cache_dir=None, progress: bool = True, metadata: str = "metadata.csv") -> Corpus:
    """Read an LJSpeech-format corpus, computing features once into
    <cache_dir or corpus_cache(data_dir)>/<audio_key(spec)>/ (one .npy per utterance and
    feature, written atomically, plus index.json of frame counts and each wav's size and
    mtime: a replaced or edited wav is featurized again).

    Characters outside the vocabulary are dropped (the public implementations strip them
    too). Unusable utterances are skipped: text empty after normalization, text over
    spec.max_chars, audio over spec.max_frames * spec.r frames, silent audio, an unreadable
    wav. Both are counted in one warning; a DataError only when nothing usable remains.
    `metadata`: as read_ljspeech's (the features share the corpus's cache)."""
    entries = read_ljspeech(data_dir, metadata)
    cache = Path(cache_dir if cache_dir is not None else corpus_cache(data_dir)) / audio_key(spec)
    cache.mkdir(parents=True, exist_ok=True)
    W.remove_leftovers(cache, older_than=STALE_TEMP_S)  # several runs may share a cache
    limit = spec.max_frames * spec.r
    long_text, long_audio = f"text over max_chars={spec.max_chars}", f"audio over max_frames*r={limit} frames"
    skipped = {k: [] for k in ("text empty after normalization", long_text, long_audio, "silent audio",
                               "an unreadable wav")}  # reason -> [(id, detail)], in this order
    ids, dropped = {}, {}  # id -> ids, Counter of the unknown characters dropped
    for e in entries:
        try:
            encoded = text.encode(e.text, spec, drop_unknown=True)
        except text.TextTooLongError:
            skipped[long_text].append((e.id, ""))
        except text.TextError:
            skipped["text empty after normalization"].append((e.id, ""))
        else:
            ids[e.id], dropped[e.id] = encoded.ids, collections.Counter(encoded.dropped)
    index = _read_index(cache)
    todo = [e for e in entries if e.id in ids and not _cached(cache, e.id, index.get(e.id), _source(e.wav))]
    saved_at = time.monotonic()
    try:
        for e in tqdm(todo, desc=f"features {Path(data_dir).name}", unit="utt", disable=not progress):
            index.pop(e.id, None)
            try:
                index[e.id] = _featurize(e, spec, cache)
            except audio.AudioError as err:
                skipped["an unreadable wav"].append((e.id, str(err)))
            except _Silent:
                skipped["silent audio"].append((e.id, ""))
            if time.monotonic() - saved_at > INDEX_EVERY_S:  # a killed run keeps most of its work
                _write_index(cache, spec, index)
                saved_at = time.monotonic()
    finally:
        if todo:
            _write_index(cache, spec, index)
    items = []
    for e in entries:
        if e.id in ids and e.id in index:
            if index[e.id]["frames"] > limit:
                skipped[long_audio].append((e.id, ""))
            else:
                items.append(Utterance(e.id, e.text, ids[e.id], index[e.id]["frames"]))
    reasons = _describe(skipped)
    if not items:
        raise DataError(f"{data_dir}: no usable utterance among {len(entries)}: {reasons}")
    lost = collections.Counter()
    for u in items:
        lost.update(dropped[u.id])
    said = [f"skipped {len(entries) - len(items)} of {len(entries)} utterances: {reasons}"] if reasons else []
    if lost:
        chars = ", ".join(f"{c!r} {n}" for c, n in lost.most_common())
        said.append(f"dropped {sum(lost.values())} unknown characters ({chars}) from "
                    f"{sum(1 for u in items if dropped[u.id])} utterances")
    if said:
        warnings.warn(f"{data_dir}: {'; '.join(said)}", stacklevel=2)
    return Corpus(spec, items, cache)


class _Silent(Exception):
    """A wav whose peak is below SILENT_PEAK: nothing to learn from."""


def _source(wav: Path) -> list:
    """[size, mtime_ns] of a wav: what its cached features were computed from."""
    st = wav.stat()
    return [st.st_size, st.st_mtime_ns]


def _featurize(e: Entry, spec: Spec, cache: Path) -> dict:
    """Compute and cache one utterance's features; its index record."""
    size, mtime_ns = _source(e.wav)  # before reading: a file replaced meanwhile is redone next time
    wav = audio.load_wav(e.wav, spec)
    if np.abs(wav).max() < SILENT_PEAK:
        raise _Silent
    mel, mag = audio.features(wav, spec)
    _atomic_write(cache / f"{e.id}.mel.npy", lambda f: np.save(f, mel))
    _atomic_write(cache / f"{e.id}.mag.npy", lambda f: np.save(f, mag))
    return {"size": size, "mtime_ns": mtime_ns, "frames": mel.shape[1]}


def _describe(skipped: dict) -> str:
    """'1 with silent audio (Z1), 2 with an unreadable wav (B1: why, B2)': non-empty reasons,
    counted, with their first few ids (and the first one's detail)."""
    parts = []
    for reason, found in skipped.items():
        if found:
            shown = [f"{uid}: {detail}" if detail and i == 0 else uid for i, (uid, detail) in enumerate(found[:3])]
            parts.append(f"{len(found)} with {reason} ({', '.join(shown)}{', ...' if len(found) > 3 else ''})")
    return " ".join(", ".join(parts).split())


def _read_index(cache: Path) -> dict:
    """{id: {"size", "mtime_ns", "frames"}} of a cache ({} if unreadable or of an older format)."""
    try:
        return dict(json.loads((cache / "index.json").read_text())["utterances"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_index(cache: Path, spec: Spec, utterances: dict) -> None:
    index = {"audio": {k: getattr(spec, k) for k in AUDIO_FIELDS}, "utterances": utterances}
    _atomic_write(cache / "index.json", lambda f: f.write(json.dumps(index, indent=0).encode()))


def _cached(cache: Path, uid: str, record, source: list) -> bool:
    """The index has the utterance, computed from this very wav (size, mtime), and both feature
    files exist (they are only ever written whole)."""
    return (record is not None and [record.get("size"), record.get("mtime_ns")] == source
            and all((cache / f"{uid}.{kind}.npy").is_file() for kind in ("mel", "mag")))


def _atomic_write(path: Path, write) -> None:
    """write(binary file) through weights.atomic_write (whole files only, mode as open() gives)."""
    def to_file(tmp):
        with open(tmp, "wb") as f:
            write(f)
    W.atomic_write(path, to_file)


def split(n_items: int, seed: int, test_fraction: float = 0.05) -> tuple:
    """(train_idx, test_idx): sorted int arrays, a seeded random partition of range(n_items);
    at least one of each when n_items >= 2."""
    if n_items < 0 or not 0 < test_fraction < 1:
        raise ValueError(f"need n_items >= 0 and 0 < test_fraction < 1, got {n_items}, {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n_items)
    n_test = min(max(round(n_items * test_fraction), 1), n_items - 1) if n_items >= 2 else 0
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def bucket(lengths, indices, batch_size: int, rng: np.random.Generator) -> list:
    """One epoch of index lists: shuffle, sort by length within chunks of BUCKET_CHUNK
    batches (similar lengths share a batch, little padding), then shuffle the batch order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = rng.permutation(np.asarray(indices, np.int64))
    chunk = batch_size * BUCKET_CHUNK
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        groups += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    return [groups[k] for k in rng.permutation(len(groups))]


def batches(corpus: Corpus, indices, batch_size: int, rng: np.random.Generator, skip: int = 0):
    """Iterator over one epoch of padded, reduced Batches (common.data.batch.make_batch) of
    corpus items `indices`, length-bucketed; deterministic for a given rng state.
    The last batch of a chunk may be smaller. The first `skip` batches are left out
    without loading their features (a resumed run continues mid-epoch)."""
    lengths = [u.n_frames for u in corpus.items]
    for group in itertools.islice(bucket(lengths, indices, batch_size, rng), skip, None):
        feats = [corpus.features(i) for i in group]
        yield make_batch(corpus.spec, [corpus.items[i].ids for i in group], [f[0] for f in feats],
                         [f[1] for f in feats])


# --- LJSpeech's statistics (common.data.grammar, bench.inputs' synthetic batches) ----------
# LJSpeech 1.1, 13,100 clips: characters per text in 20-character bins (0-19, ..., 180-199);
# min 12, mean 99.9, median 102, p90 142, p99 165, max 187 characters.
LJ_CHAR_BINS = np.array([53, 562, 1227, 1858, 2459, 2744, 2572, 1361, 245, 19])
LJ_MIN_CHARS, LJ_MAX_CHARS = 12, 187
# Durations: min 1.11 s, mean 6.57 s, max 10.10 s; closely tied to the text length.
LJ_MIN_SECONDS, LJ_MAX_SECONDS = 1.11, 10.10
LJ_CHARS_PER_SECOND = 15.2
# [ours] held-out quality is reported per band of normalized characters (end-of-text not counted):
# one overall figure hid that sentences past ~60 characters did not align (common.evaluation.quality).
LENGTH_BANDS = ((1, 60), (61, 100), (101, 140), (141, LJ_MAX_CHARS))
LJ_SECONDS_NOISE = 0.3  # [ours] standard deviation around chars / rate
