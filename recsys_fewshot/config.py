"""Structured configs: one dataclass schema per config group.

Every YAML file under ``conf/<group>/`` starts its defaults list with ``/schema/<group>/<name>@_here_``,
so Hydra merges it onto the schema below: an unknown key (``head.dimm=8``) or a value of the wrong
type (``trainer.max_epochs=ten``) fails at composition, naming the key. An unknown option
(``encoder=bert-bse``) fails in Hydra itself, listing the valid options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

DEFAULT_HOME = "~/.cache/recsys_fewshot"


@dataclass
class DatasetConfig:
    kind: str = MISSING  # reader: ml100k | csv | amazon_unisrec
    root: Optional[str] = None  # data root; None -> env RECSYS_FEWSHOT_DATA -> ~/.cache/recsys_fewshot
    dir: str = MISSING  # folder under root (or an absolute path)
    task: str = "rating"  # the data set's natural task, unless the split or `task=` says otherwise
    positive_threshold: float = 4.0  # rating >= this is "liked" (CTR label, ranking relevance, AUC)
    text_template: str = "{title}"  # str.format over the items table's columns
    list_columns: list[str] = field(default_factory=list)  # columns whose "|"-joined values read as "a, b"
    default_fold: str = "given"  # the files' own split used by split=given
    options: dict[str, Any] = field(default_factory=dict)  # extra reader options


@dataclass
class SplitConfig:
    _target_: str = MISSING  # a protocol function RecData -> Split
    _partial_: bool = True
    seed: int = 0  # seeds the draw of the split (and of valid), independent of the model seed
    task: Optional[str] = None  # the task this protocol implies (None: the data set's)


@dataclass
class GivenSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.protocols.given"
    fold: str = "given"  # which of the files' own splits (MovieLens: u1..u5, ua, ub)
    valid_ratio: float = 0.05  # carved at random from train when the fold has no valid part


@dataclass
class RandomSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.protocols.random_split"
    test_ratio: float = 0.2
    valid_ratio: float = 0.05  # fraction of the remaining train rows


@dataclass
class TemporalSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.protocols.temporal"
    test_ratio: float = 0.2  # the latest 20% of interactions (global time cut)
    valid_ratio: float = 0.05  # the latest part of what is left


@dataclass
class LeaveOneOutSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.protocols.leave_one_out"
    task: Optional[str] = "ranking"
    min_interactions: int = 3  # users with fewer stay entirely in train


@dataclass
class EncoderConfig:
    name_or_path: Optional[str] = None  # None: no text (ID-only baseline)
    pooling: str = "mean"  # cls | mean | last (decoder LMs)
    max_length: int = 64  # tokens; longer texts are truncated
    batch_size: int = 128  # texts per forward pass during extraction
    normalize: bool = True  # L2-normalise the text vectors
    dtype: str = "float32"  # float32 | bfloat16 (GPU only)


@dataclass
class HeadConfig:
    _target_: str = MISSING
    dim: int = 64  # width of user/item vectors
    item_id: bool = True  # add an ID embedding to warm items (cold items use text only)
    user_id: bool = True  # user ID embedding
    user_history: bool = True  # add a pooling of the user's training items (works for unseen users)
    biases: bool = True  # user, item and global biases
    id_dropout: float = 0.0  # drop the item ID part during training so text learns to stand alone
    text_hidden: int = 0  # 0: linear projection of text vectors; >0: one hidden layer of this width
    init_std: float = 0.01
    l2: float = 0.0  # L2 penalty on the embeddings and biases a batch touches (classic MF regularisation)


@dataclass
class MLPHeadConfig(HeadConfig):
    _target_: str = "recsys_fewshot.models.heads.NCF"
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1


@dataclass
class MFHeadConfig(HeadConfig):
    _target_: str = "recsys_fewshot.models.heads.MF"


@dataclass
class PeftConfig:
    method: str = "frozen"  # frozen: vectors extracted once and cached


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0  # decoupled decay of every weight at every step (head.l2 is the MF-style one)


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    batch_size: int = 256
    eval_batch_size: int = 4096
    patience: int = 3  # epochs without improvement of the monitored metric before stopping
    monitor: Optional[str] = None  # e.g. rmse, auc, ndcg@10; None: the task's default
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPUs; bf16 is slow on this kind of CPU)
    cpu: bool = False  # force CPU even when a GPU is visible
    num_negatives: int = 64  # ranking task: sampled negatives per positive
    grad_clip: float = 0.0  # 0: off
    progress: bool = True  # tqdm bar on the main process
    limit_train_batches: int = 0  # 0: all (debug runs use 1)


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20])
    chunk_size: int = 1024  # users scored at once in full ranking
    ranking: bool = True  # rating/ctr tasks also rank all items for recall/NDCG


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: str = "recsys-fewshot"
    entity: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; None: offline unless an API key is configured
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    split: Any = MISSING
    encoder: EncoderConfig = MISSING
    head: Any = MISSING
    peft: PeftConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    task: Optional[str] = None  # rating | ctr | ranking; None: the split's, else the data set's
    seed: int = 0  # model initialisation and batch order
    cache_dir: Optional[str] = None  # None -> env RECSYS_FEWSHOT_CACHE -> ~/.cache/recsys_fewshot/cache
    save_predictions: bool = True


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"base": DatasetConfig},
    "split": {
        "given": GivenSplitConfig,
        "random": RandomSplitConfig,
        "temporal": TemporalSplitConfig,
        "leave_one_out": LeaveOneOutSplitConfig,
    },
    "encoder": {"base": EncoderConfig},
    "head": {"mf": MFHeadConfig, "mlp": MLPHeadConfig},
    "peft": {"base": PeftConfig},
    "optimizer": {"base": OptimizerConfig},
    "trainer": {"base": TrainerConfig},
    "logger": {"base": LoggerConfig},
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def resolve_data_root(root: Optional[str]) -> Path:
    value = root or os.environ.get("RECSYS_FEWSHOT_DATA") or DEFAULT_HOME
    return Path(value).expanduser().resolve()


def resolve_cache_dir(cache_dir: Optional[str]) -> Path:
    value = cache_dir or os.environ.get("RECSYS_FEWSHOT_CACHE") or f"{DEFAULT_HOME}/cache"
    return Path(value).expanduser().resolve()
