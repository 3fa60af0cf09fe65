"""`head=ease`: EASE (Steck, WWW 2019), an item-to-item linear model fitted in closed form, with an
optional prior from the items' text vectors.

Fit (when the head is built, from the users' training histories X, users x items, 0/1):

    B = argmin ||X - X B||^2 + text_weight ||T^T - T^T B||^2 + reg ||B||^2   subject to diag(B) = 0
    P = (X^T X + text_weight * T T^T + reg * I)^-1,   B = -P / diag(P) (column-wise), diag(B) = 0

T are the unit-length, centred text vectors of the items (rows): the text term adds one pseudo-user per
text dimension, whose "interaction" with an item is that item's coordinate, so items with similar texts
share weights and an item nobody rated still gets a column (text-regularised EASE; `text_weight=0` is
plain EASE). Scores: x_u B, where x_u is the user's
history with weight `decay`^age (age 0: the newest item; `decay=1`: every history item counts 1).

A user's scores need only their history, so users never seen in training are served by swapping in a
history (`set_history`, no retraining). `refit=true` also refits B on each history swapped in for
evaluation (e.g. train + valid for the test), as a final model fitted on all known data would be; the
hyper-parameters still come from the valid run, which sees B fitted on train only.

There is nothing to train by gradient: the head declares itself `closed_form`, so the loop runs no epochs.
B is n_items^2 floats: `max_items` guards against catalogues where that does not fit.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_fewshot.data.recdata import UserHistory
from recsys_fewshot.models.capabilities import Capabilities


class EASE(nn.Module):
    # fitted when built (the loop runs no epochs); with negative_weight > 0 the histories hold every rated row
    capabilities = Capabilities(tasks=("ranking",), closed_form=True, all_rows="negative_weight", new_users=True)
    chunk_pairs = 2048

    def __init__(self, n_users: int, n_items: int, item_features: Optional[torch.Tensor] = None,
                 history: Optional[UserHistory] = None,
                 reg: float = 200.0,  # L2 on the item-item weights (EASE's lambda): the main knob, tune on valid
                 text_weight: float = 0.0,  # > 0: the items' text vectors act as pseudo-users (a text prior); 0: plain
                 decay: float = 1.0,  # a history item's input weight = decay ** age (age 0: newest); 1: order ignored
                 negative_weight: float = 0.0,  # ranking: input weight of a rated-but-not-liked item (0: left out)
                 refit: bool = False,  # refit on each history swapped in for evaluation (train + valid for the test)
                 cold_map: float = 0.0,  # > 0: columns of items without interactions from a text map (relative ridge)
                 cold_bias: float = 0.0,  # cold_map: weight of a text-predicted item prior (how many users take it)
                 cold_bias_reg: float = 10.0,  # ridge of that prior's text regression
                 pop_exponent: float = 0.0,  # divide item j's column by (1 + its input mass)^pop_exponent; 0: off
                 max_items: int = 30000,  # the weight matrix is n_items^2 floats (30,000 items: 3.4 GiB)
                 item_text: Optional[nn.Module] = None):
        super().__init__()
        if item_text is not None:
            raise ValueError("head=ease reads frozen, cached text vectors: use peft=frozen")
        check_item_item_head("ease", history, n_items, max_items, "head=mf")
        if not reg > 0:
            raise ValueError(f"head.reg must be > 0, got {reg}")
        if text_weight < 0:
            raise ValueError(f"head.text_weight must be >= 0, got {text_weight}")
        if text_weight > 0 and item_features is None:
            raise ValueError("head.text_weight > 0 needs item text vectors: set an encoder (encoder=minilm) "
                             "or head.text_weight=0")
        if not 0 < decay <= 1:
            raise ValueError(f"head.decay must be in (0, 1], got {decay}")
        if cold_map < 0:
            raise ValueError(f"head.cold_map must be >= 0, got {cold_map}")
        if cold_map > 0 and item_features is None:
            raise ValueError("head.cold_map > 0 maps text to weights: set an encoder (encoder=minilm) or head.cold_map=0")
        if cold_bias < 0 or cold_bias_reg <= 0:
            raise ValueError(f"head.cold_bias must be >= 0 and head.cold_bias_reg > 0, got {cold_bias}, {cold_bias_reg}")
        if cold_bias > 0 and cold_map <= 0:
            raise ValueError("head.cold_bias weighs the cold columns' text prior: it needs head.cold_map > 0")
        if not 0 <= negative_weight <= 1:
            raise ValueError(f"head.negative_weight must be in [0, 1], got {negative_weight}")
        if not 0 <= pop_exponent <= 1:
            raise ValueError(f"head.pop_exponent must be in [0, 1], got {pop_exponent}")
        self.n_users, self.n_items, self.negative_weight = n_users, n_items, float(negative_weight)
        self.reg, self.text_weight, self.decay, self.refit = float(reg), float(text_weight), float(decay), refit
        self.cold_map, self.cold_bias, self.cold_bias_reg = float(cold_map), float(cold_bias), float(cold_bias_reg)
        self.pop_exponent = float(pop_exponent)
        text = None
        if text_weight > 0 or cold_map > 0:
            feats = item_features.float()
            text = F.normalize(feats - feats.mean(0, keepdim=True), dim=-1)
        self.register_buffer("text", text, persistent=False)
        self.anchor = nn.Parameter(torch.zeros(()))  # lets the optimiser and the engine run; unused in scores
        self._fits: list[tuple[UserHistory, tuple[torch.Tensor, torch.Tensor]]] = []  # fits so far: (history, (B, bias))
        weights, bias = self._fit(history)
        self.register_buffer("weights", weights, persistent=False)
        self.register_buffer("bias", bias, persistent=False)  # per item; nonzero only for cold items (cold_bias)
        self._fits.append((history, (weights, bias)))
        self._set_input(history)

    # --- fitting -------------------------------------------------------------------------
    def _fit(self, history: UserHistory) -> tuple[torch.Tensor, torch.Tensor]:
        gram, col_sum = history_gram(history, self.n_items, self.negative_weight)
        g = gram.double()
        cold = g.diagonal() == 0  # items nobody in `history` interacted with
        if self.text_weight > 0:
            t = self.text.double().cpu()
            g += self.text_weight * (t @ t.T)
        g.diagonal().add_(self.reg)
        b = ease_solution(g)
        bias = torch.zeros(self.n_items, dtype=torch.float64)
        if self.cold_map > 0 and cold.any() and not cold.all():
            b[:, cold], bias[cold] = self._cold_columns(gram.double(), col_sum.double(), len(history.indptr) - 1,
                                                        cold)
            b.fill_diagonal_(0.0)  # the text-mapped columns hold their own items' entries too
        if self.pop_exponent > 0:  # column j / (1 + its input mass)^pop_exponent: popular items stop crowding lists
            b /= (1.0 + col_sum.double()).pow(self.pop_exponent).unsqueeze(0)
        return b.float().to(self.anchor.device), bias.float().to(self.anchor.device)

    def _cold_columns(self, gram: torch.Tensor, col_sum: torch.Tensor, n_users: int,
                      cold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns and biases for items without interactions, from text: B[:, j] = T W t_j, with W (d x d) the
        ridge fit of X[:, warm] ~ (X T) W T[warm]^T, closed form through the eigenbases of A^T A (A = X T) and
        T_w^T T_w; the ridge is `cold_map` x the largest eigenvalue product. Score of a cold item:
        (x_u T) W t_j, a bilinear text model distilled from the users' warm-item rows. Everything it needs of
        X comes from the Gram matrix: A^T A = T^T (X^T X) T, A^T X_w T_w = T^T (X^T X)[:, warm] T_w.

        `cold_bias` > 0 adds an item prior: m_j, an item's mean entry in X (how many users took it), ridge-
        regressed on text over the warm items (ridge `cold_bias_reg`); W is then fitted to X minus that prior,
        and a cold item scores (x_u T) W t_j + cold_bias * m_hat_j."""
        t = self.text.double().cpu()
        warm = ~cold
        ata = t.T @ gram @ t
        atc = t.T @ gram[:, warm] @ t[warm]
        a_sum = t.T @ col_sum  # A^T 1
        tw = t[warm]
        prior = torch.zeros(self.n_items, dtype=torch.float64)
        if self.cold_bias > 0:  # m_hat = T v, v the ridge fit of the warm items' mean entries on their text
            eye = torch.eye(t.shape[1], dtype=torch.float64)
            v = torch.linalg.solve(tw.T @ tw + self.cold_bias_reg * eye, tw.T @ (col_sum[warm] / max(n_users, 1)))
            prior = t @ v
            atc -= torch.outer(a_sum, prior[warm] @ tw)  # A^T (X_w - 1 m_hat_w^T) T_w
        la, qa = torch.linalg.eigh(ata)
        lt, qt = torch.linalg.eigh(tw.T @ tw)
        la, lt = la.clamp_min(0), lt.clamp_min(0)
        ridge = self.cold_map * float(la.max() * lt.max())
        w = qa @ ((qa.T @ atc @ qt) / (torch.outer(la, lt) + ridge)) @ qt.T
        return t @ w @ t[cold].T, self.cold_bias * prior[cold]

    # --- histories -----------------------------------------------------------------------
    def _set_input(self, history: UserHistory) -> None:
        self.history = history

    def set_history(self, history: UserHistory) -> None:
        """Score from `history` from now on (no retraining; with `refit`, B is refitted on it, once per history)."""
        self._set_input(history)
        if not self.refit:
            return
        for known, fitted in self._fits:
            if known is history:  # (the model may have moved to another device since that fit)
                self.weights, self.bias = (x.to(self.anchor.device) for x in fitted)
                return
        self.weights, self.bias = self._fit(history)
        self._fits.append((history, (self.weights, self.bias)))

    @contextlib.contextmanager
    def with_user_slots(self, owners: torch.Tensor) -> Iterator[None]:
        """A context (models/extend.py): histories posted at request time are read with the weights fitted so
        far, never refitted on (`refit` is off inside the block); EASE has no per-user parameter."""
        from recsys_fewshot.models.extend import swapped

        with swapped(self, refit=False):
            yield

    def explain_inputs(self, users: torch.Tensor) -> torch.Tensor:
        """[users, n_items] x_u, the input rows the scores are x_u B + bias (explanations)."""
        return self._rows(users)

    def explain_kernel(self, history_items: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """B[history items, items]: with `explain_inputs`, x_ui B_ij is history item i's term in the score of j."""
        return self.weights[history_items][:, items]

    def _rows(self, users: torch.Tensor) -> torch.Tensor:
        return _dense_rows(self.history, users.cpu(), self.n_items, self.decay,
                           self.negative_weight).to(self.weights.device)

    # --- scores --------------------------------------------------------------------------
    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = [(self._rows(users[s: s + self.chunk_pairs]) * self.weights[:, items[s: s + self.chunk_pairs]].T).sum(-1)
               + self.bias[items[s: s + self.chunk_pairs]] for s in range(0, len(users), self.chunk_pairs)]
        return (torch.cat(out) if out else self.anchor.new_zeros(0)) + 0 * self.anchor

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self._rows(users) @ self.weights[:, items] + self.bias[items] + 0 * self.anchor

    def candidate_scorer(self, items: torch.Tensor):
        cols, bias = self.weights[:, items].contiguous(), self.bias[items]  # once per evaluation
        return lambda users: self._rows(users) @ cols + bias + 0 * self.anchor

    def regularization(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=users.device)


def check_item_item_head(name: str, history: Optional[UserHistory], n_items: int, max_items: int,
                         instead: str) -> None:
    """The set-up errors shared by the heads with an n_items x n_items weight matrix fitted on histories."""
    if history is None:
        raise ValueError(f"head={name} needs the users' training histories (head.user_history=true)")
    if history.ratings is not None:
        raise ValueError(f"head={name} ranks items from implicit histories: use task=ranking "
                         "(task=rating/ctr need a head that predicts values, e.g. head=mf)")
    if n_items > max_items:
        raise ValueError(f"head={name}: {n_items} items need an n_items^2 weight matrix "
                         f"({n_items ** 2 * 4 / 2 ** 30:.1f} GiB); raise head.max_items (now {max_items}) "
                         f"if it fits, or use {instead}")


def ease_solution(gram: torch.Tensor) -> torch.Tensor:
    """EASE's closed form from the regularised Gram matrix G: P = G^-1, B = -P / diag(P), diag(B) = 0."""
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    b = -p / p.diagonal().unsqueeze(0)
    b.fill_diagonal_(0.0)
    return b


def history_gram(history: UserHistory, n_items: int, negative_weight: float,
                 chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """X^T X and the column sums X^T 1 of the history matrix (entries as `_dense_rows` with no decay), a few
    thousand users' dense rows at a time."""
    gram = torch.zeros(n_items, n_items)
    col_sum = torch.zeros(n_items)
    n = len(history.indptr) - 1
    for start in range(0, n, chunk):
        rows = _dense_rows(history, torch.arange(start, min(start + chunk, n)), n_items, None, negative_weight)
        gram.addmm_(rows.T, rows)
        col_sum += rows.sum(0)
    return gram, col_sum


def _dense_rows(history: UserHistory, users: torch.Tensor, n_items: int, decay: Optional[float],
                negative_weight: float = 0.0) -> torch.Tensor:
    """Rows of the users' history matrix. An entry is worth 1, or `negative_weight` where the history marks it
    not relevant (weight 0: histories built with all rows), times `decay`^age of the item's newest occurrence
    (age 0: the last item of the history; `decay` None or 1: no decay)."""
    u = users.numpy()
    rows, entry = history.entry_index(u)
    out = torch.zeros(len(u), n_items)
    if len(rows) == 0:
        return out
    items = history.items[entry]
    values = np.where(history.weights[entry] > 0, 1.0, negative_weight)
    if decay is not None and decay != 1.0:
        age = history.indptr[u + 1][rows] - 1 - entry  # 0: the row's last entry
        values = values * decay ** age.astype(np.float64)
    flat = torch.as_tensor(rows * n_items + items)
    out.view(-1).scatter_reduce_(0, flat, torch.as_tensor(values, dtype=torch.float32), reduce="amax")
    return out  # an item met twice: its largest (for decay < 1: newest) weight
