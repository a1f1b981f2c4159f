"""Exact and near-duplicate removal; the first row of each cluster (in input order) is kept.

Exact: a 128-bit BLAKE2 hash of the row's text with case, spacing and punctuation folded, so
"Hello,  World!" and "hello world" are one row. Only the hashes are kept (16 bytes a row).

Near: MinHash over word shingles with LSH banding (datasketch `MinHash` + `MinHashLSH`; Broder 1997,
Leskovec et al. "Mining of Massive Datasets" ch. 3). Rows stream through: a row's signature is
queried against the rows kept so far; LSH candidates are confirmed with the signatures' estimated
Jaccard similarity (LSH alone lets through pairs somewhat below the threshold), and a confirmed row
is dropped as a duplicate of the earliest kept one. Memory holds the LSH band tables and one
uint32 signature per *kept* row (num_perm x 4 bytes: 512 B at 128), never the shingles.
Shingles are hashed with xxHash32 (datasketch's default SHA-1 was a third of the step's time) and
permuted by datasketch in numpy: ~0.3 ms a row, so 100k rows take well under a minute on one core
for this step; a hand-written MinHash was not needed.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import xxhash

from ...config import PrepareDedupConfig
from ...errors import ConfigError
from .records import Record, all_texts
from .steps import StepReport

_WORD = re.compile(r"\w+", re.UNICODE)


def words(rec: Record) -> list[str]:
    return [w.lower() for t in all_texts(rec) for w in _WORD.findall(t)]


def exact_key(rec: Record) -> bytes:
    """Hash of the folded text; field boundaries kept (so moving text between turns is not a dupe)."""
    folded = "\x1f".join(" ".join(w.lower() for w in _WORD.findall(t)) for t in all_texts(rec))
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).digest()


def shingles(tokens: list[str], size: int) -> set[bytes]:
    """Word `size`-grams; a row shorter than `size` words is one shingle of all its words."""
    if len(tokens) < size:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


class ExactDedup:
    name = "exact dedup"

    def __init__(self) -> None:
        self.seen: dict[bytes, str] = {}
        self.report = StepReport(self.name)

    def __call__(self, records: list[Record]) -> list[Record]:
        kept = []
        self.report.rows_in += len(records)
        for rec in records:
            key = exact_key(rec)
            first = self.seen.get(key)
            if first is None:
                self.seen[key] = rec.where
                kept.append(rec)
            else:
                self.report.drop("exact duplicate", rec.where, f"same text as {first}")
        self.report.rows_out += len(kept)
        return kept


class NearDedup:
    name = "near dedup"

    def __init__(self, cfg: PrepareDedupConfig, seed: int = 1):
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            raise ConfigError("`prepare.dedup.near` needs datasketch: pip install 'tunesmith[prepare]' (or set prepare.dedup.near: false)") from None
        self.cfg = cfg
        self._minhash = MinHash
        self._perms = MinHash(num_perm=cfg.num_perm, seed=seed).permutations
        # Bands tuned for recall (missed pairs weigh 9x false candidates): every candidate is
        # confirmed against the signatures below, so a false candidate costs a comparison, a miss a dupe.
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9))
        self.signatures: list[np.ndarray] = []  # of kept rows, by key
        self.wheres: list[str] = []
        self.report = StepReport(self.name)
        self.report.notes.append(
            f"MinHash LSH: {cfg.num_perm} permutations, {cfg.shingle_size}-word shingles, Jaccard >= {cfg.threshold}"
        )

    def signature(self, rec: Record) -> np.ndarray:
        m = self._minhash(num_perm=self.cfg.num_perm, permutations=self._perms, scheme="affine32", hashfunc=xxhash.xxh32_intdigest)
        m.update_batch(list(shingles(words(rec), self.cfg.shingle_size)))
        return m

    def __call__(self, records: list[Record]) -> list[Record]:
        kept = []
        self.report.rows_in += len(records)
        for rec in records:
            m = self.signature(rec)
            sig = m.hashvalues.astype(np.uint32)
            match, best = None, 0.0
            for key in self.lsh.query(m):
                j = float(np.mean(self.signatures[key] == sig))
                if j >= self.cfg.threshold and (match is None or key < match):
                    match, best = key, j
            if match is None:
                self.lsh.insert(len(self.signatures), m, check_duplication=False)
                self.signatures.append(sig)
                self.wheres.append(rec.where)
                kept.append(rec)
            else:
                self.report.drop("near duplicate", rec.where, f"~{best:.2f} Jaccard with {self.wheres[match]}")
        self.report.rows_out += len(kept)
        return kept
