"""Answers of a frozen language model, kept across runs: the same prompt to the same model is asked once.

A frozen model's score of a prompt depends on the model's files, the two answer tokens and the prompt
text only, so zero-shot, in-context and hybrid runs at other shot counts or seeds reuse what an earlier
run scored (TALLRec Movie's 1,000 test prompts cost about 20 minutes on a 2-core CPU with a 270M model).
One SQLite file per model under `<cache_dir>/llm_scores/`: SQLite makes each write atomic and lets
concurrent runs share it. Keys are sha256 of (answers, prompt); a changed model file changes the file name
(`text_encoder.model_identity`). A trained model (any `peft=` other than frozen) is never cached.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Optional

FOLDER = "llm_scores"


class ScoreCache:
    def __init__(self, cache_dir: Path, model_path: Path, numerics: str = ""):
        from recsys_fewshot.encoders.text_encoder import DIGESTS_FILE, model_identity

        folder = Path(cache_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        identity = model_identity(Path(model_path), folder / DIGESTS_FILE)  # memoised: warm runs skip the hashing
        variant = hashlib.sha256(numerics.encode()).hexdigest()[:8]  # weight dtype and autocast
        self.file = folder / f"{identity[:32]}-{variant}.sqlite"
        self._db: Optional[sqlite3.Connection] = None
        self.hits = self.misses = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(str(self.file), timeout=60)
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        return self._db

    @staticmethod
    def key(answers: tuple[int, int], prompt: str) -> str:
        return hashlib.sha256(f"{answers[0]}\0{answers[1]}\0{prompt}".encode()).hexdigest()

    def get(self, keys: list[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        conn = self._conn()
        for start in range(0, len(keys), 500):
            chunk = keys[start: start + 500]
            rows = conn.execute(f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(chunk))})",
                                chunk).fetchall()
            found.update(rows)
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put(self, items: dict[str, float]) -> None:
        with self._conn() as conn:  # one transaction
            conn.executemany("INSERT OR REPLACE INTO scores (key, score) VALUES (?, ?)", list(items.items()))

    def __getstate__(self):  # picklable (the connection is reopened where needed)
        return {**self.__dict__, "_db": None}
