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

from recsys_fewshot.encoders.spec import EncoderSpec
from recsys_fewshot.llm.spec import LLMSpec

DEFAULT_HOME = "~/.cache/recsys_fewshot"


@dataclass
class ReaderConfig:
    _target_: str = MISSING  # the reader class (raw files -> RecData); the node's other keys are its options


@dataclass
class MovieLens100KReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.sources.MovieLens100K"


@dataclass
class MovieLens1MReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.ml1m.MovieLens1M"


@dataclass
class MovieLens25MReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.ml25m.MovieLens25M"
    top_tags: int = 10  # each movie's most applied tags of tags.csv kept as its `tags` column; 0: tags.csv is not read


@dataclass
class LastFmReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.lastfm.LastFm"
    top_tags: int = 10  # each artist's most given tags kept as its `tags` column (with a tag-assignment file)


@dataclass
class CsvReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.sources.Csv"
    rating_scale: Optional[list[float]] = None  # [low, high]: a rating outside is an error naming its file and line


@dataclass
class AmazonUniSRecReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.sources.AmazonUniSRec"
    name: str = "Scientific"  # file prefix of the atomic files ({name}.text, {name}.train.inter, ...)


@dataclass
class TallrecJsonReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.tallrec.TallrecJson"
    train_file: Optional[str] = None  # the parts' files (conf/dataset/tallrec_json.yaml: dataset.train_file, ...)
    valid_file: Optional[str] = None
    test_file: Optional[str] = None


@dataclass
class BookCrossingReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.bookcrossing.BookCrossing"
    ratings: str = "explicit"  # explicit: the 1..10 grades | all: also the 0s (interacted, not graded: rating 0)
    unknown_books: str = "drop"  # ratings of ISBNs absent from BX-Books.csv: drop | keep (items without text)


@dataclass
class Amazon2023ReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.amazon2023.Amazon2023"
    category: str = "All_Beauty"  # the files <category>.jsonl.gz and meta_<category>.jsonl.gz (dataset.category)
    k_core: int = 5  # keep users and items with at least k ratings, repeated until stable; 0: all (dataset.k_core)


@dataclass
class MindReaderConfig(ReaderConfig):
    _target_: str = "recsys_fewshot.data.mind.Mind"


@dataclass
class DatasetConfig:
    reader: Any = MISSING  # how the raw files are read: `_target_` names the reader class, the other keys its options
    root: Optional[str] = None  # data root; None -> env RECSYS_FEWSHOT_DATA -> ~/.cache/recsys_fewshot
    dir: str = MISSING  # folder under root (or an absolute path)
    task: str = "rating"  # the data set's natural task, unless the split or `task=` says otherwise
    positive_threshold: float = 4.0  # rating >= this is "liked" (CTR label, ranking relevance, AUC)
    text_template: Optional[str] = None  # str.format over the items table's columns; None: every text column
    list_columns: list[str] = field(default_factory=list)  # columns whose "|"-joined values read as "a, b"
    missing_text_limit: float = 0.5  # share of items that may have no text (all template fields empty); 1.0: any
    default_fold: str = "given"  # the files' own split used by split=given


@dataclass
class MovieLens100KDatasetConfig(DatasetConfig):
    reader: MovieLens100KReaderConfig = field(default_factory=MovieLens100KReaderConfig)


@dataclass
class MovieLens1MDatasetConfig(DatasetConfig):
    reader: MovieLens1MReaderConfig = field(default_factory=MovieLens1MReaderConfig)


@dataclass
class MovieLens25MDatasetConfig(DatasetConfig):
    reader: MovieLens25MReaderConfig = field(default_factory=MovieLens25MReaderConfig)


@dataclass
class LastFmDatasetConfig(DatasetConfig):
    reader: LastFmReaderConfig = field(default_factory=LastFmReaderConfig)


@dataclass
class CsvDatasetConfig(DatasetConfig):
    reader: CsvReaderConfig = field(default_factory=CsvReaderConfig)


@dataclass
class AmazonUniSRecDatasetConfig(DatasetConfig):
    reader: AmazonUniSRecReaderConfig = field(default_factory=AmazonUniSRecReaderConfig)


@dataclass
class TallrecJsonDatasetConfig(DatasetConfig):
    reader: TallrecJsonReaderConfig = field(default_factory=TallrecJsonReaderConfig)
    train_file: Optional[str] = None  # TALLRec prompt files, relative to dataset.dir (or absolute); None: absent
    valid_file: Optional[str] = None
    test_file: Optional[str] = None  # given: the test set is this whole file, read only to score it


@dataclass
class BookCrossingDatasetConfig(DatasetConfig):
    reader: BookCrossingReaderConfig = field(default_factory=BookCrossingReaderConfig)


@dataclass
class Amazon2023DatasetConfig(DatasetConfig):
    reader: Amazon2023ReaderConfig = field(default_factory=Amazon2023ReaderConfig)
    category: str = "All_Beauty"  # an Amazon Reviews 2023 category (Books, Electronics, ...); a wrong one lists them
    k_core: int = 5  # users and items with fewer ratings are dropped, repeatedly, until none is left; 0: keep all


@dataclass
class MindDatasetConfig(DatasetConfig):
    reader: MindReaderConfig = field(default_factory=MindReaderConfig)


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
class ColdItemsSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.coldstart.cold_items"
    cold_ratio: float = 0.2  # fraction of items made cold: all their interactions are test
    valid_ratio: float = 0.1  # fraction of the remaining (warm) items made cold for valid


@dataclass
class ColdUsersSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.coldstart.cold_users"
    k: int = 5  # support interactions per cold user (their first k by time)
    cold_ratio: float = 0.2  # fraction of users made cold
    valid_ratio: float = 0.1  # fraction of the remaining (warm) users made cold for valid
    min_queries: int = 1  # a user needs k + min_queries interactions to be drawn as cold
    adapt_steps: int = 0  # >0: also report metrics after this many per-user fine-tuning steps on the support
    adapt_lr: float = 0.01  # learning rate of that fine-tuning (Adam, full batch; L2 1.0 on what it fits)


@dataclass
class PerUserSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.coldstart.per_user"
    test_ratio: float = 0.2  # of each user's interactions
    valid_ratio: float = 0.1  # of each user's remaining interactions


@dataclass
class TallrecSplitConfig(SplitConfig):
    _target_: str = "recsys_fewshot.data.tallrec.tallrec"
    task: Optional[str] = "ctr"
    n_shots: int = 64  # N labelled samples trained on (the first N of a seeded shuffle of the pool); <=0: all
    valid: str = "full"  # full: the protocol's valid set (TALLRec) | holdout: part of the N | none: nothing else
    n_samples: int = 10_000  # rating data: the last this many samples are cut into train/valid/test; <= 0: all
    history_len: int = 10  # rating data: items in each sample's history
    train_ratio: float = 0.8  # pool (train) share, cut in order (rating data) or after a seeded shuffle (one file)
    valid_ratio: float = 0.1  # valid share; the rest is test
    holdout_ratio: float = 0.25  # valid=holdout: share of the N shots held out for early stopping
    partition_seed: int = 0  # the seeded cut into pool/valid/test of one sample file, or of the users (recipe=users)
    augment: str = "none"  # none | loo | prefix: extra training samples from each shot's own labelled items
    positive_threshold: float = 4.0  # ratings >= this are liked (history labels of rating data)
    recipe: str = "released"  # rating data: released (TALLRec's last samples, in order) | users (test from many users) | time (by target time)
    order: str = "time"  # rating data, a user's ratings: time | shuffle (seeded, file order) | shuffle_by_item (TALLRec's Book)
    order_seed: int = 42  # the seed of random.seed before each user's shuffle (TALLRec's and ReLLa's: 42)
    targets: str = "every"  # rating data: every (each position with min_history before it) | last (one per user)
    min_history: Optional[int] = None  # earlier items a target needs; None: history_len (every history full)
    history_from: str = "recent"  # targets=last: recent (the items just before) | first (TALLRec's Book: items[:-1][:10])


EncoderConfig = EncoderSpec  # the encoder group's schema is the spec the encoders are built from


@dataclass
class PeftConfig:
    _target_: str = MISSING  # the method class: how it wraps the model, what trains, how it is saved and loaded
    method: str = MISSING  # the method's name, recorded in metrics.json and encoder/method.json (peft=NAME picks it)


@dataclass
class FrozenPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.Frozen"
    method: str = "frozen"


@dataclass
class BitFitPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.BitFit"
    method: str = "bitfit"


@dataclass
class FullPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.Full"
    method: str = "full"


@dataclass
class LoraPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.Lora"
    method: str = "lora"
    r: int = 8  # adapter rank
    alpha: int = 16  # the update is scaled by alpha / r
    dropout: float = 0.1  # on the adapter's input
    target_modules: Optional[list[str]] = None  # None: peft's default for the architecture (BERT: query, value)
    top_layers: int = 0  # adapters in the last N of the num_hidden_layers only (peft layers_to_transform); 0: all


@dataclass
class AdaLoraPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.AdaLora"
    method: str = "adalora"
    init_r: int = 12  # starting rank of every adapter
    target_r: int = 8  # average rank left after the budget is reallocated
    alpha: int = 16
    dropout: float = 0.1
    target_modules: Optional[list[str]] = None
    tinit: int = 0  # optimizer steps before ranks start being pruned
    tfinal: int = 0  # final steps with the ranks fixed
    delta_t: int = 1  # steps between two budget reallocations
    top_layers: int = 0  # adapters in the model's last N layers only (as for LoRA); 0: all


@dataclass
class IA3PeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.IA3"
    method: str = "ia3"
    target_modules: Optional[list[str]] = None  # None: peft's default (BERT: key, value, output.dense)
    feedforward_modules: Optional[list[str]] = None  # of those, the ones scaled on their input


@dataclass
class PrefixPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.Prefix"
    method: str = "prefix"
    num_virtual_tokens: int = 20  # learnt key/value positions prepended in every layer
    projection: bool = False  # reparametrise the prefix through an MLP


@dataclass
class PromptPeftConfig(PeftConfig):
    _target_: str = "recsys_fewshot.encoders.peft_wrap.Prompt"
    method: str = "prompt"
    num_virtual_tokens: int = 20  # learnt input embeddings prepended to every text
    init_text: Optional[str] = None  # initialise them from this text's tokens; None: random


@dataclass
class KGConfig:
    source: str = "none"  # none | attributes (the data set's own) | triples (a TSV at `path`)
    path: Optional[str] = None  # kg=triples: head<TAB>relation<TAB>tail lines (item:<id>, user:<id> or free names)
    model: str = "transe"  # transe | distmult | rotate: how a triple is scored
    weight: float = 0.1  # KG loss weight beside the recommendation loss (CKE's balance)
    margin: float = 6.0  # TransE/RotatE: score = margin - distance
    num_negatives: int = 8  # corrupted heads/tails per sampled triple
    batch_size: int = 1024  # triples sampled per training step
    aggregate: str = "neighbors"  # tower adds: neighbors (mean of its tails) | entity (its own embedding) | both


@dataclass
class OptimizerConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 3e-3
    weight_decay: float = 0.0  # decoupled decay of every weight at every step (head.l2 is the MF-style one)
    fused: Optional[bool] = None  # torch's fused kernel (AdamW: ~3x faster steps on CPU); None: torch's default
    head_lr: Optional[float] = None  # learning rate of the recommender head; None: lr
    encoder_lr: Optional[float] = None  # learning rate of the trainable encoder part (peft != frozen); None: lr
    scheduler: str = "none"  # none | linear | cosine: decay of the learning rates over all optimizer steps
    warmup: float = 0.0  # fraction of the optimizer steps spent ramping the learning rates up from 0


@dataclass
class TrainerConfig:
    max_epochs: int = 30
    batch_size: int = 1024
    batching: str = "rows"  # rows: uniform shuffle | users: each user's rows together (linear cost on big data)
    eval_batch_size: int = 4096
    patience: int = 3  # epochs without improvement of the monitored metric before stopping
    monitor: Optional[str] = None  # e.g. rmse, auc, ndcg@10; None: the task's default
    mixed_precision: str = "auto"  # auto: bf16 on a CUDA GPU that supports it, else no | no | bf16 | fp16
    cpu: bool = False  # force CPU even when a GPU is visible
    num_negatives: int = 64  # ranking task: sampled negatives per positive; 0: all training items (full softmax)
    grad_clip: float = 0.0  # 0: off
    progress: bool = True  # tqdm bar on the main process, when stderr is a terminal (not in logs or sbatch output)
    limit_train_batches: int = 0  # 0: all (debug runs use 1)
    gradient_accumulation_steps: int = 1  # batches summed into one optimizer step
    split_batches: bool = True  # batch_size is the global batch split over processes (results do not depend on N)
    checkpoint_every: int = 0  # optimizer steps between checkpoints (accelerator.save_state); 0: none
    resume: Optional[str] = None  # true: newest checkpoint of this run dir; or a checkpoint / run dir path
    resume_rng: str = "strict"  # strict: a resume refuses missing or unreadable RNG states | warn: goes on (differs)


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20])
    chunk_size: int = 1024  # users scored at once in full ranking
    ranking: bool = True  # rating/ctr tasks also rank all items for recall/NDCG
    candidates: Optional[str] = None  # all | test_items (items of the part being scored) | sampled; None: the split's
    num_negatives: int = 100  # candidates=sampled: negatives drawn per user, each positive ranked against them
    negatives: str = "uniform"  # candidates=sampled: uniform | popularity (in proportion to the item's interactions)
    candidates_seed: int = 0  # candidates=sampled: seeds the draw (not seed or split.seed: same negatives every run)
    history_with_valid: bool = False  # test-time user histories also hold the valid interactions


@dataclass
class LoggerConfig:
    _target_: str = MISSING  # the tracker class (recsys_fewshot.tracking): Accelerate's tracker, its settings, summary
    name: str = MISSING  # the tracker's name: wandb | tensorboard | none (logger=NAME picks it)
    project: str = "recsys-fewshot"
    entity: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; None: offline unless an API key is configured
    group: Optional[str] = None  # None: the sweep directory's name for multirun jobs, no group for single runs
    job_type: Optional[str] = None  # None: "sweep" for multirun jobs, "train" for single runs
    tags: list[str] = field(default_factory=list)  # added to the automatic ones (dataset=..., head=..., ...)


@dataclass
class WandbLoggerConfig(LoggerConfig):
    _target_: str = "recsys_fewshot.tracking.Wandb"
    name: str = "wandb"


@dataclass
class TensorBoardLoggerConfig(LoggerConfig):
    _target_: str = "recsys_fewshot.tracking.TensorBoard"
    name: str = "tensorboard"


@dataclass
class NoLoggerConfig(LoggerConfig):
    _target_: str = "recsys_fewshot.tracking.NoTracker"
    name: str = "none"


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
    kg: KGConfig = field(default_factory=KGConfig)
    llm: LLMSpec = field(default_factory=LLMSpec)  # the language model prompt heads read (head=llm, hybrid)
    eval: EvalConfig = field(default_factory=EvalConfig)
    task: Optional[str] = None  # rating | ctr | ranking; None: the split's, else the data set's
    seed: int = 0  # model initialisation and batch order
    cache_dir: Optional[str] = None  # None -> env RECSYS_FEWSHOT_CACHE -> ~/.cache/recsys_fewshot/cache
    save_predictions: bool = True
    optimized_metric: Optional[str] = None  # what main() returns to a sweeper, e.g. valid/rmse; None: valid monitor
    init_from: Optional[str] = None  # a run directory: load its model.safetensors where names and shapes match


# {group: {option: schema}}: for dataset, peft and logger the option names are also the names a run folder
# saved before `_target_` chose these components (dataset.kind, peft.method, logger.name): see `saved_config.saved_run_config`
SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"base": DatasetConfig, "ml100k": MovieLens100KDatasetConfig, "csv": CsvDatasetConfig,
                "amazon_unisrec": AmazonUniSRecDatasetConfig, "tallrec_json": TallrecJsonDatasetConfig,
                "bookcrossing": BookCrossingDatasetConfig, "amazon2023": Amazon2023DatasetConfig,
                "mind_small": MindDatasetConfig, "ml1m": MovieLens1MDatasetConfig, "ml25m": MovieLens25MDatasetConfig,
                "lastfm": LastFmDatasetConfig},
    "split": {
        "given": GivenSplitConfig,
        "random": RandomSplitConfig,
        "temporal": TemporalSplitConfig,
        "leave_one_out": LeaveOneOutSplitConfig,
        "cold_items": ColdItemsSplitConfig,
        "cold_users": ColdUsersSplitConfig,
        "per_user": PerUserSplitConfig,
        "tallrec": TallrecSplitConfig,
    },
    "encoder": {"base": EncoderConfig},
    "peft": {"base": PeftConfig, "frozen": FrozenPeftConfig, "bitfit": BitFitPeftConfig, "full": FullPeftConfig,
             "lora": LoraPeftConfig, "adalora": AdaLoraPeftConfig, "ia3": IA3PeftConfig, "prefix": PrefixPeftConfig,
             "prompt": PromptPeftConfig},
    "optimizer": {"base": OptimizerConfig},
    "trainer": {"base": TrainerConfig},
    "logger": {"base": LoggerConfig, "wandb": WandbLoggerConfig, "tensorboard": TensorBoardLoggerConfig,
               "none": NoLoggerConfig},
    "kg": {"base": KGConfig},
    "llm": {"base": LLMSpec},
    "eval": {"base": EvalConfig},
}


def register_configs(conf_dir: Optional[Path] = None) -> None:
    """The schemas into Hydra's ConfigStore; head schemas for the `head/` options of `conf_dir` (default: the
    project's conf/)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    from recsys_fewshot.registry import CONF_DIR, head_options, head_schema

    for name, target in head_options(Path(conf_dir) if conf_dir else CONF_DIR).items():  # each head's schema: its constructor's knobs
        cs.store(group="schema/head", name=name, node=head_schema(target))


def resolve_data_root(root: Optional[str]) -> Path:
    value = root or os.environ.get("RECSYS_FEWSHOT_DATA") or DEFAULT_HOME
    return Path(value).expanduser().resolve()


def resolve_cache_dir(cache_dir: Optional[str]) -> Path:
    value = cache_dir or os.environ.get("RECSYS_FEWSHOT_CACHE") or f"{DEFAULT_HOME}/cache"
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        source = "cache_dir" if cache_dir else ("$RECSYS_FEWSHOT_CACHE" if os.environ.get("RECSYS_FEWSHOT_CACHE")
                                                else "the default cache folder")
        raise ValueError(f"{source}={path} is a file, not a folder: point it at a directory for the caches")
    return path


# the packages whose classes a saved run's config may name by `_target_` (evaluate instantiates nothing else)
