"""The prompt heads on tiny random causal LMs (Llama, Qwen2, Gemma 3) with a tokenizer trained here: scores read
at the answer position equal the model's own full-vocabulary logits, padding changes nothing, prompts follow
TALLRec's wording and shorten from the oldest history item, a LoRA-trained scorer learns a planted rule and
reloads through `evaluate`, in-context demonstrations change the score without a gradient, and bad setups are
refused naming the key."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inprocess import compose, run_job  # noqa: E402
from lm_fakes import LIKED_GENRES, build_tiny_causal_lm, write_genre_ctr_csv  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ("llama", "qwen2", "gemma3")


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-lms")
    return {kind: build_tiny_causal_lm(root / kind, kind) for kind in KINDS}


def language_model(path: Path, max_length: int = 512, batch_size: int = 4):
    from recsys_fewshot.llm.causal import LanguageModel, load_causal_lm

    model, tokenizer, _ = load_causal_lm(str(path), "float32", "cpu")
    lm = LanguageModel(model.requires_grad_(False), tokenizer, max_length, batch_size)
    lm.set_answers("Yes", "No")
    return lm


PROMPTS = ["### Response:\n", "User Preference: \"Silver Comedy 3\"\nWhether the user will like the target movie",
           "Below is an instruction that describes a task. ### Input: Paper Drama 7 ### Response:\n"]


@pytest.mark.parametrize("kind", KINDS)
def test_answer_scores_equal_full_vocabulary_logits_and_padding_changes_nothing(tiny_lms, kind):
    lm = language_model(tiny_lms[kind])
    with torch.no_grad():
        batched = lm.answer_scores(PROMPTS)
        alone = torch.cat([lm.answer_scores([p]) for p in PROMPTS])
        naive = torch.cat([lm.full_vocabulary_scores([p]) for p in PROMPTS])  # the model's own forward, unpadded
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched, naive, atol=1e-5, rtol=1e-4)
    assert batched.std() > 0  # the prompts are told apart


def test_prompts_use_tallrec_wording_and_lose_the_oldest_history_items_first():
    from recsys_fewshot.llm.prompts import PromptBuilder, Sample

    names = ["Heat (1995)", "Up (2009)", "Jaws (1975)", "Alien (1979)"]
    builder = PromptBuilder(names, noun="movie")
    text = builder.build(Sample([(0, True), (1, False), (2, True)], 3))
    assert text.startswith("Below is an instruction that describes a task, paired with an input")
    assert ("### Instruction:\nGiven the user's preference and unpreference, identify whether the user will like "
            "the target movie by answering \"Yes.\" or \"No.\".") in text
    assert ('### Input:\nUser Preference: "Heat (1995)", "Jaws (1975)"\nUser Unpreference: "Up (2009)"\n'
            'Whether the user will like the target movie "Alien (1979)"?\n\n### Response:\n') in text + "\n"
    assert text.endswith("### Response:\n")
    words = lambda texts: [len(t.split()) for t in texts]  # noqa: E731 - a word count as the token budget
    full = words([text])[0]
    short = PromptBuilder(names, noun="movie", max_length=full - 2, count_tokens=words)
    cut = short.build(Sample([(0, True), (1, False), (2, True)], 3))
    assert short.dropped_items == 1 and '"Heat (1995)"' not in cut and '"Jaws (1975)"' in cut  # the oldest went
    assert 'target movie "Alien (1979)"' in cut  # never the candidate
    demo = Sample([(1, True)], 0, label=1)
    with_demo = builder.build(Sample([(2, False)], 3), [demo])
    assert with_demo.count("### Input:") == 2 and "### Response:\nYes.\n\n### Input:" in with_demo
    tiny = PromptBuilder(names, noun="movie", max_length=5, count_tokens=words)
    with pytest.raises(ValueError, match="alone takes .* llm.max_length=5"):
        tiny.build(Sample([(0, True)], 3), [demo])


def test_answers_that_are_not_one_token_are_refused_naming_the_tokens(tiny_lms):
    from recsys_fewshot.llm.causal import LLMError

    lm = language_model(tiny_lms["llama"])
    with pytest.raises(LLMError, match=r"head.yes='Absolutely yes' is \d+ tokens for this tokenizer \(\["):
        lm.set_answers("Absolutely yes", "No")
    with pytest.raises(LLMError, match="same token"):
        lm.set_answers("Yes", "Yes")


def test_a_model_without_a_causal_lm_head_and_quantization_without_cuda_are_refused(tiny_bert, tiny_lms):
    from recsys_fewshot.llm.causal import LLMError, load_causal_lm

    with pytest.raises(LLMError, match=f"llm.name_or_path={tiny_bert}: .*'bert'"):
        load_causal_lm(str(tiny_bert), "float32", "cpu")
    with pytest.raises(LLMError, match="llm.quantization=4bit .* needs a CUDA GPU"):
        load_causal_lm(str(tiny_lms["llama"]), "float32", "cpu", quantization="4bit")
    with pytest.raises(LLMError, match="llm.dtype='float8'"):
        load_causal_lm(str(tiny_lms["llama"]), "float8", "cpu")


def common(tmp_path: Path, lm: Path, data: Path) -> list[str]:
    return ["dataset=csv", f"dataset.dir={data}", "split=given", "task=ctr", "eval.ranking=false",
            f"llm.name_or_path={lm}", "llm.dtype=float32", "llm.batch_size=32", "logger=none",
            "trainer.progress=false", "trainer.cpu=true", f"cache_dir={tmp_path / 'cache'}"]


@pytest.mark.slow
def test_the_scorer_learns_a_planted_rule(tmp_path, tiny_lms):
    """Liked genres are read off the candidate's title in the prompt: a rule no history statistic sees."""
    data = write_genre_ctr_csv(tmp_path / "data", n_samples=240, history_len=2)
    out = run_job(tmp_path / "run", *common(tmp_path, tiny_lms["llama"], data), "head=llm", "encoder=none",
                  "peft=full", "optimizer.lr=3e-3", "trainer.batch_size=8", "trainer.max_epochs=4",
                  "trainer.patience=1")
    assert out["test"]["auc"] > 0.95, out["test"]
    assert out["prompts"]["built"] > 0 and out["prompts"]["dropped_history_items"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("peft", ["lora", "full"])
def test_a_trained_scorer_saves_apart_and_reloads_through_evaluate(tmp_path, tiny_lms, peft):
    """Gemma 3 ties its output embedding to its input embedding: a fully fine-tuned copy reloads all the same."""
    from safetensors.torch import load_file

    from recsys_fewshot.evaluate import evaluate_run

    data = write_genre_ctr_csv(tmp_path / "data", n_samples=60, history_len=2)
    run = tmp_path / "run"
    out = run_job(run, *common(tmp_path, tiny_lms["gemma3"], data), "head=llm", "encoder=none", f"peft={peft}",
                  "optimizer.lr=1e-2", "trainer.batch_size=8", "trainer.max_epochs=2")
    counts = out["training"]["encoder_parameters"]
    assert out["training"]["peft"] == peft
    if peft == "lora":
        assert 0 < counts["trainable"] < counts["total"] / 10
        assert (run / "encoder" / "adapter_model.safetensors").is_file()
    assert not [k for k in load_file(str(run / "model.safetensors")) if k.startswith("llm.")]  # no LM weights
    again = evaluate_run(run)
    for name, value in out["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.slow
def test_in_context_demonstrations_change_the_scores_without_a_gradient(tmp_path, tiny_lms, tiny_bert):
    from inprocess import stages

    data = write_genre_ctr_csv(tmp_path / "data", n_samples=60)
    base = [*common(tmp_path, tiny_lms["qwen2"], data), "head=llm", "encoder=none", "trainer.max_epochs=0",
            "head.bias=false"]
    zero = stages(*base)
    two = stages(*base, "head.demonstrations=2")
    two_again = stages(*base, "head.demonstrations=2")
    other_seed = stages(*base, "head.demonstrations=2", "head.demo_seed=7")
    users, items = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    assert not any(p.requires_grad for p in two.model.llm.parameters())
    s0 = zero.model(users, items)
    s2 = two.model(users, items)
    assert not s2.requires_grad  # nothing to train: no parameter update is possible
    assert not torch.allclose(s0, s2)  # the demonstrations are read
    torch.testing.assert_close(s2, two_again.model(users, items))  # seeded: the same draw again
    assert not torch.allclose(s2, other_seed.model(users, items))
    prompt = two.model.context.prompts(users[:1], items[:1])[0]
    assert prompt.count("### Input:") == 3 and prompt.count("### Response:\n") == 3
    similar = stages(*base, "head.demonstrations=2", "head.demo_selection=similar", f"encoder.name_or_path={tiny_bert}")
    assert similar.model.context.prompts(users[:1], items[:1])[0].count("### Input:") == 3
    with pytest.raises(ValueError, match="head.demo_selection=similar compares item text vectors"):
        stages(*base, "head.demonstrations=2", "head.demo_selection=similar")


@pytest.mark.slow
def test_hybrid_adds_the_language_models_score_computed_once(tmp_path, tiny_lms, tiny_bert):
    data = write_genre_ctr_csv(tmp_path / "data", n_samples=80)
    out = run_job(tmp_path / "run", *common(tmp_path, tiny_lms["gemma3"], data), "head=hybrid",
                  f"encoder.name_or_path={tiny_bert}", "trainer.max_epochs=20", "trainer.batch_size=4096",
                  "optimizer.lr=0.05")
    assert out["prompts"]["scored_pairs"] == out["split"]["train"] + out["split"]["valid"] + out["split"]["test"]
    assert out["prompts"]["built"] == out["prompts"]["scored_pairs"]  # frozen model: each pair asked once


def test_prompt_heads_are_checked_before_anything_runs(tiny_lms):
    from recsys_fewshot.settings import check_settings

    with pytest.raises(ValueError, match="head=llm asks a language model .* set llm="):
        check_settings(compose("head=llm", "split=tallrec", "eval.ranking=false"))
    with pytest.raises(ValueError, match="cannot rank the whole catalogue .* eval.ranking=false"):
        check_settings(compose("head=llm", "llm=smollm2-135m", "split=tallrec"))
    with pytest.raises(ValueError, match="head=mf reads no prompts"):
        check_settings(compose("head=mf", "llm=smollm2-135m"))
    with pytest.raises(ValueError, match="supports task ctr"):
        check_settings(compose("head=llm", "llm=smollm2-135m", "task=rating", "eval.ranking=false"))
    with pytest.raises(ValueError, match="peft=prompt prepends virtual tokens"):
        check_settings(compose("head=llm", "llm=smollm2-135m", "protocol=tallrec_movie", "peft=prompt"))
    with pytest.raises(ValueError, match="encoder.template and encoder.center apply to frozen extraction only"):
        check_settings(compose("encoder=gemma3-270m", "peft=lora"))
    check_settings(compose("model=llm_lora", "protocol=tallrec_movie"))
    check_settings(compose("model=llm_icl", "protocol=tallrec_movie"))
    check_settings(compose("model=hybrid", "protocol=tallrec_movie"))


def test_the_users_recipe_draws_valid_and_test_from_many_held_out_users(tmp_path):
    from fakes import write_ml100k
    from recsys_fewshot.data.sources import read_ml100k
    from recsys_fewshot.data.tallrec import tallrec

    write_ml100k(tmp_path / "ml-100k", n_users=80, n_items=40, n_per_user=20, seed=3)
    data = read_ml100k(tmp_path / "ml-100k")
    released = tallrec(data, n_shots=16, n_samples=400, history_len=5)
    users = tallrec(data, n_shots=16, n_samples=400, history_len=5, recipe="users", partition_seed=1)
    assert users.test["user"].nunique() > 2 * released.test["user"].nunique()
    assert len(users.test) == 40 and len(users.valid) == 40  # n_samples x the test / valid shares
    assert not set(users.test["user"]) & set(users.train["user"])  # test users are held out from the shots
    assert not set(users.valid["user"]) & set(users.test["user"])
    again = tallrec(data, n_shots=16, n_samples=400, history_len=5, recipe="users", partition_seed=1)
    assert users.test.equals(again.test)  # seeded
    import pytest as _pytest

    with _pytest.raises(ValueError, match="split.recipe='bogus'"):
        tallrec(data, recipe="bogus")


@pytest.mark.slow
def test_two_processes_train_the_scorer_as_one(tmp_path, tiny_lms):
    """torchrun, 2 CPU processes (gloo): the global batch is split over the ranks; the metrics are those of one."""
    import os
    import subprocess

    from inprocess import REPO

    data = write_genre_ctr_csv(tmp_path / "data", n_samples=60, history_len=2)
    args = [*common(tmp_path, tiny_lms["llama"], data), "head=llm", "encoder=none", "peft=lora",
            "peft.dropout=0.0", "optimizer.lr=1e-2", "trainer.batch_size=6", "trainer.max_epochs=2",
            "trainer.patience=2"]
    one = run_job(tmp_path / "one", *args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "recsys_fewshot.train", *args, f"hydra.run.dir={tmp_path / 'two'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["training"]["processes"] == 2 and two["training"]["updates"] == one["training"]["updates"]
    for name, value in one["test"].items():
        assert two["test"][name] == pytest.approx(value, abs=2e-3), name
    assert (tmp_path / "two" / "encoder" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_a_frozen_models_answers_are_kept_across_runs_and_a_trained_ones_are_not(tmp_path, tiny_lms):
    data = write_genre_ctr_csv(tmp_path / "data", n_samples=40, history_len=2)
    args = [*common(tmp_path, tiny_lms["llama"], data), "head=llm", "encoder=none", "trainer.max_epochs=0",
            "head.bias=false"]
    first = run_job(tmp_path / "first", *args)
    again = run_job(tmp_path / "again", *args)  # another run, the same prompts: nothing to compute
    assert first["prompts"]["forward_prompts"] > 0 and again["prompts"]["forward_prompts"] == 0
    assert again["prompts"]["cache_hits"] >= again["split"]["test"]
    for name, value in first["test"].items():
        assert again["test"][name] == pytest.approx(value, abs=1e-6), name
    demos = run_job(tmp_path / "demos", *args, "head.demonstrations=1")  # other prompts: asked
    assert demos["prompts"]["forward_prompts"] > 0
    lora = run_job(tmp_path / "lora", *args[:-2], "trainer.max_epochs=1", "peft=lora")
    assert "cache_hits" not in lora["prompts"]  # a trained model's answers change: never cached



def test_a_frozen_model_scores_without_dropout_while_the_head_trains(tmp_path):
    import json as _json

    path = build_tiny_causal_lm(tmp_path / "drop", "llama")
    config = _json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(_json.dumps({**config, "attention_dropout": 0.5}))
    lm = language_model(path)
    with torch.no_grad():
        lm.eval()
        quiet = lm.answer_scores(PROMPTS)
        lm.train()  # the head around it trains: the frozen model must not
        assert not lm.model.training
        torch.testing.assert_close(lm.answer_scores(PROMPTS), quiet)


def test_demonstrations_never_come_from_the_querys_own_user():
    from recsys_fewshot.data.recdata import UserHistory
    from recsys_fewshot.models.prompt_heads import PromptContext

    class FakeLM:
        max_length = 10_000
        score_cache = None
        prompts_scored = 0

        def count_tokens(self, texts):
            return [len(t.split()) for t in texts]

    # samples 0-3 train (sources 0, 0, 1, 2); sample 4 (a valid copy of sample 0: source 0) is the query
    hist = UserHistory.from_pairs(np.array([0, 1, 2, 3, 4]), np.array([1, 1, 2, 3, 1]), 5)
    pairs = (torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 6, 7]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    names = [f"item{k}" for k in range(8)]
    features = torch.eye(8)
    for selection in ("random", "similar"):
        ctx = PromptContext(hist, names, FakeLM(), "movie", 2, selection, 0, pairs, features,
                            sample_sources=np.array([0, 0, 1, 2, 0]))
        for seed_item in (5, 6, 7):
            chosen = {d.item for d in ctx.demos(4, seed_item)}
            assert chosen <= {6, 7} and len(chosen) == 2  # never samples 0 or 1 (the query's user)


def test_tied_weights_are_frozen_under_both_names():
    from recsys_fewshot.engine import trainable_state

    model = torch.nn.Module()
    model.emb = torch.nn.Embedding(5, 3).requires_grad_(False)
    model.head = torch.nn.Linear(3, 5, bias=False)
    model.head.weight = model.emb.weight  # tied, as a causal LM's output embedding
    model.adapter = torch.nn.Linear(3, 3)
    assert set(trainable_state(model)) == {"adapter.weight", "adapter.bias"}
