"""Heads that ask a causal language model (`llm=`) about each (sample, item) pair.

`PromptScorer` (`head=llm`): TALLRec's method. The prompt is TALLRec's instruction, the sample's liked and
disliked history items and the candidate (`llm/prompts.py`); the score is logit(yes) - logit(no) at the
answer position plus a trained bias. Trained with binary cross-entropy on the shots through `peft=`
(LoRA in `model=llm_lora`); with `peft=frozen` and `trainer.max_epochs=0` it scores zero-shot, or in
context: `demonstrations` > 0 puts that many training samples with their answers before the query
(chosen at random, seeded per query, or by the similarity of their candidate's text vector to the
query's), with no parameter update.

`HybridCTR` (`head=hybrid`): `head=fewshot` (per-sample ability + item appeal from text) plus
`lm_weight` x the language model's score as one more feature, fitted on the shots (early stopping on
valid). With a frozen model the scores of each pair are computed once and kept.

Both serve samples through their histories (`set_history`), score pairs one prompt each (no full ranking),
and take the task `ctr`.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.capabilities import Capabilities
from recsys_fewshot.models.fewshot import FewShotCTR

log = logging.getLogger(__name__)
SELECTIONS = ("random", "similar")


class PromptContext:
    """Histories as prompt samples, and the in-context demonstrations drawn from the training samples."""

    def __init__(self, history: UserHistory, item_names: Sequence[str], llm, noun: str, demonstrations: int,
                 demo_selection: str, demo_seed: int, train_pairs, item_features: Optional[torch.Tensor],
                 sample_sources=None):
        from recsys_fewshot.llm.prompts import PromptBuilder

        if demonstrations < 0:
            raise ValueError(f"head.demonstrations={demonstrations}: expected >= 0")
        if demo_selection not in SELECTIONS:
            raise ValueError(f"head.demo_selection={demo_selection!r}: expected one of {', '.join(SELECTIONS)}")
        if demonstrations and train_pairs is None:
            raise ValueError("head.demonstrations > 0 draws from the training samples: none were given")
        if demonstrations and demo_selection == "similar" and item_features is None:
            raise ValueError("head.demo_selection=similar compares item text vectors: set an encoder (encoder=minilm)")
        self.llm, self.k, self.selection, self.seed = llm, int(demonstrations), demo_selection, int(demo_seed)
        self.builder = PromptBuilder(list(item_names), noun=noun, max_length=llm.max_length,
                                     count_tokens=llm.count_tokens)
        self.train_history = history  # demonstrations read the training samples' own histories
        self.history = history
        self.features = None
        # the real user each sample came from: a demonstration never comes from the query's own user (its copies
        # under split.valid=none, its augmented siblings, which hold the query's candidate and label)
        n_users = len(history.indptr) - 1
        self.sources = np.arange(n_users) if sample_sources is None else np.asarray(sample_sources)
        if train_pairs is not None:
            users, items, labels = (np.asarray(torch.as_tensor(t).cpu()) for t in train_pairs)
            self.demo_users, self.demo_items, self.demo_labels = users, items, (labels > 0.5).astype(int)
            if demonstrations and demo_selection == "similar":
                f = torch.nn.functional.normalize(item_features.float(), dim=-1)
                self.features = f
        self._dropped = 0
        self.built = 0

    def sample(self, history: UserHistory, user: int, item: int, label: Optional[int] = None):
        from recsys_fewshot.llm.prompts import Sample

        lo, hi = history.indptr[user], history.indptr[user + 1]
        pairs = [(int(i), bool(w > 0)) for i, w in zip(history.items[lo:hi], history.weights[lo:hi])]
        return Sample(pairs, int(item), label)

    def demos(self, user: int, item: int) -> list:
        if not self.k:
            return []
        allowed = np.flatnonzero(self.sources[self.demo_users] != self.sources[user])  # never the query's own user
        if self.selection == "random":
            rng = np.random.default_rng([self.seed, int(user), int(item)])
            chosen = rng.choice(allowed, size=min(self.k, len(allowed)), replace=False)
        else:
            sims = (self.features[self.demo_items[allowed]] @ self.features[int(item)]).cpu().numpy()
            chosen = allowed[np.argsort(-sims, kind="stable")[: self.k]][::-1]  # the most similar last
        return [self.sample(self.train_history, int(self.demo_users[r]), int(self.demo_items[r]),
                            int(self.demo_labels[r])) for r in chosen]

    def prompts(self, users: torch.Tensor, items: torch.Tensor) -> list[str]:
        out = [self.builder.build(self.sample(self.history, u, i), self.demos(u, i))
               for u, i in zip(users.tolist(), items.tolist())]
        self.built += len(out)
        dropped = self.builder.dropped_items + self.builder.dropped_demos
        if dropped and not self._dropped:  # once; the totals go to metrics.json ("prompts")
            log.warning("prompts over llm.max_length=%d tokens lose their oldest history items (then demonstrations); "
                        "the counts are in metrics.json under 'prompts'", self.builder.max_length)
        self._dropped = dropped
        return out

    def stats(self) -> dict[str, int]:
        cache = self.llm.score_cache
        return {"built": self.built, "dropped_history_items": self.builder.dropped_items,
                "dropped_demonstrations": self.builder.dropped_demos, "max_length": self.builder.max_length,
                "demonstrations": self.k, "forward_prompts": self.llm.prompts_scored,
                **({"cache_hits": cache.hits, "cache_misses": cache.misses} if cache is not None else {})}


class PromptScorer(nn.Module):
    capabilities = Capabilities(tasks=("ctr",), prompts=True, new_users=True, full_ranking=False)
    chunk_users = 64

    def __init__(self, n_users: int, n_items: int, history: Optional[UserHistory] = None,
                 item_features: Optional[torch.Tensor] = None, item_names: Optional[Sequence[str]] = None,
                 item_noun: str = "item", llm: Optional[nn.Module] = None, train_pairs=None, sample_sources=None,
                 global_mean: float = 0.0,
                 demonstrations: int = 0,  # in-context examples (training samples with their answers) before each query
                 demo_selection: str = "random",  # random (seeded per query) | similar: nearest candidates by text vector
                 demo_seed: int = 0,  # seeds the random choice of demonstrations
                 yes: str = "Yes",  # the answer token scored as positive (must be one token)
                 no: str = "No",  # the answer token scored as negative
                 bias: bool = True):  # a trained offset added to every score (calibration)
        super().__init__()
        if llm is None:
            raise ValueError("head=llm reads prompts with a language model: set llm= (e.g. llm=smollm2-135m)")
        if history is None or item_names is None:
            raise ValueError("head=llm reads each sample's history: use split=tallrec (or CSV CTR samples)")
        self.n_users, self.n_items = n_users, n_items
        self.llm = llm
        self.llm.set_answers(yes, no)
        self.context = PromptContext(history, item_names, llm, item_noun, demonstrations, demo_selection,
                                     demo_seed, train_pairs, item_features, sample_sources)
        self.offset = nn.Parameter(torch.tensor(float(global_mean) if bias else 0.0), requires_grad=bias)
        if not bias and not any(p.requires_grad for p in llm.parameters()):
            self.anchor = nn.Parameter(torch.zeros(()))  # nothing trains (zero-shot, in context): lets the loop run

    def set_history(self, history: UserHistory) -> None:
        self.context.history = history

    def prompt_stats(self) -> dict[str, int]:
        """Prompts built and what the token budget left out (metrics.json's `prompts`)."""
        return self.context.stats()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.llm.answer_scores(self.context.prompts(users, items)).to(self.offset.device) + self.offset

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        uu, ii = users.repeat_interleave(len(items)), items.repeat(len(users))
        return self(uu, ii).view(len(users), len(items))

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.offset.new_zeros(())


class HybridCTR(FewShotCTR):
    capabilities = Capabilities(tasks=("ctr",), prompts=True, new_users=True, full_ranking=False)

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None, known_users: Optional[torch.Tensor] = None,
                 global_mean: float = 0.0, item_names: Optional[Sequence[str]] = None, item_noun: str = "item",
                 llm: Optional[nn.Module] = None, train_pairs=None, sample_sources=None,
                 recency: float = 0.9,  # head=fewshot's knobs (see there)
                 prior_precision: float = 1.0,  # of the per-sample ability's prior
                 newton_steps: int = 5,  # steps of the per-sample MAP estimate
                 text_probe: bool = True,  # item appeal from a linear probe of the frozen text vector
                 item_id: bool = True,  # + an ID offset for items the training samples labelled
                 content: bool = True,  # + similarity of the target to the history's liked minus disliked items
                 l2_text: float = 3.0,  # L2 prior of the text probe
                 l2_id: float = 3.0,  # of the ID offsets
                 l2_content: float = 3.0,  # of the content weight
                 l2_lm: float = 1.0,  # L2 prior of the language model's weight
                 max_history: int = 50,  # the latest items of a history that are read
                 demonstrations: int = 0,  # in-context examples before each query of the language model
                 demo_selection: str = "random",  # random | similar
                 demo_seed: int = 0,  # seeds the random choice of demonstrations
                 yes: str = "Yes",  # the answer token scored as positive
                 no: str = "No"):  # the answer token scored as negative
        super().__init__(n_users, n_items, item_features=item_features, history=history, known_users=known_users,
                         global_mean=global_mean, recency=recency, prior_precision=prior_precision,
                         newton_steps=newton_steps, text_probe=text_probe, item_id=item_id, content=content,
                         l2_text=l2_text, l2_id=l2_id, l2_content=l2_content, max_history=max_history)
        if llm is None:
            raise ValueError("head=hybrid adds a language model's score: set llm= (e.g. llm=smollm2-135m)")
        self.llm = llm
        self.llm.set_answers(yes, no)
        self.context = PromptContext(history, item_names, llm, item_noun, demonstrations, demo_selection,
                                     demo_seed, train_pairs, item_features, sample_sources)
        self.lm_weight = nn.Parameter(torch.tensor(0.0))
        self.l2_lm = l2_lm
        self._scores: dict[tuple[int, int, int], float] = {}  # frozen model: (history, sample, item) -> score
        self._keyed: dict[int, UserHistory] = {}

    def set_history(self, history: UserHistory) -> None:
        super().set_history(history)
        if hasattr(self, "context"):
            self.context.history = history

    def prompt_stats(self) -> dict[str, int]:
        return {**self.context.stats(), "scored_pairs": len(self._scores)}

    def lm_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        frozen = not any(p.requires_grad for p in self.llm.parameters())
        if not frozen:
            return self.llm.answer_scores(self.context.prompts(users, items))
        tag = id(self.context.history)
        self._keyed[tag] = self.context.history  # held: its id cannot be reused while its scores are kept
        keys = [(tag, u, i) for u, i in zip(users.tolist(), items.tolist())]
        missing = [k for k in dict.fromkeys(keys) if k not in self._scores]
        if missing:
            u = torch.tensor([k[1] for k in missing])
            i = torch.tensor([k[2] for k in missing])
            with torch.no_grad():
                values = self.llm.answer_scores(self.context.prompts(u, i)).float().cpu().tolist()
            self._scores.update(zip(missing, values))
        return torch.tensor([self._scores[k] for k in keys], device=self.lm_weight.device)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().forward(users, items) + self.lm_weight * self.lm_scores(users, items).to(self.lm_weight.dtype)

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        uu, ii = users.repeat_interleave(len(items)), items.repeat(len(users))
        return self(uu, ii).view(len(users), len(items))

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().regularization(users, items) + self.l2_lm * self.lm_weight.pow(2) / self.n_train
