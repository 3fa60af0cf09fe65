"""Decoder-LLM benchmark on TALLRec's Movie test (released-identical by default), as a table.

    python scripts/bench_llm.py throughput [--llm gemma3-270m] [--prompts 32]
    python scripts/bench_llm.py lora-step [--llm gemma3-270m] [--batch 4] [--tokens 256]
    python scripts/bench_llm.py table [--shots 16 64 256] [--seeds 0] [--methods fewshot llm_lora llm_icl hybrid]
                                      [--llm gemma3-270m] [--out outputs/bench_llm] [-- extra overrides]

`throughput`: prompts/s of the scorer (decoder body + the two answer rows of the output embedding, logits
at the answer position only) against the naive forward (the model's logits over the whole vocabulary at
every position), on the same TALLRec Movie test prompts in the same process; their scores agree.
`lora-step`: seconds per LoRA step (r=8 on q/v, `batch` prompts of `tokens` tokens) and the peak RSS.
`table`: one run per method x N x seed through the CLI (`protocol=tallrec_movie model=<method>`, with the
changes of METHOD_ARGS), each method's test AUC against `model=fewshot` on the same test with `compare`
(samples grouped by their 16 source users), seconds per training sample and per scored prompt, and peak RSS.
Existing runs (a metrics.json in their folder) are reused. Needs RECSYS_FEWSHOT_DATA (ml-100k/) and the
models (`python scripts/fetch_llm.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LLMS = {"gemma3-270m": "google/gemma-3-270m", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
TALLREC = {16: 0.6724, 64: 0.6748, 256: 0.7198}  # published test AUC, LLaMA-7B + LoRA (Bao et al., 2023, Table 2)
GOAL = {16: 0.76, 64: 0.77, 256: 0.79}
# per method: what the language-model runs change in the protocol. TALLRec trains on the N shots (no augmentation);
# LoRA and in-context runs stop on a quarter of the shots (every valid prompt costs ~1 s on a CPU); the zero-shot
# run scores the full valid and test sets once, which the hybrid (the protocol as model=fewshot runs it) reuses
# from the frozen model's score cache
METHOD_ARGS = {"fewshot": [], "likerate": [], "llm_zeroshot": ["split.augment=none"],
               "llm_lora": ["split.augment=none", "split.valid=holdout"],
               "llm_icl": ["split.augment=none", "split.valid=holdout"], "hybrid": []}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def movie_prompts(n: int) -> list[str]:
    """The first `n` test prompts of TALLRec's Movie protocol, as the scorer builds them."""
    from hydra import compose, initialize_config_dir

    from recsys_fewshot import build
    from recsys_fewshot.config import register_configs
    from recsys_fewshot.data.text import render_texts
    from recsys_fewshot.llm.prompts import PromptBuilder, Sample

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["protocol=tallrec_movie", "split.augment=none"])
    from hydra.utils import instantiate

    data = build.load_data(cfg)
    split = instantiate(cfg.split)(data)
    data, split, view = build.sample_users(cfg, data, split)
    names = render_texts(data.items, cfg.dataset.get("item_name") or "{title} ({year})", [])
    builder = PromptBuilder(names, noun="movie")
    hist, test = view.test_history, split.test
    out = []
    for u, i in zip(test["user"].to_numpy()[:n], test["item"].to_numpy()[:n]):
        lo, hi = hist.indptr[u], hist.indptr[u + 1]
        out.append(builder.build(Sample([(int(a), bool(w > 0)) for a, w in zip(hist.items[lo:hi], hist.weights[lo:hi])],
                                        int(i))))
    return out


def load_lm(name: str, batch_size: int = 8, random_init: bool = False):
    """The scorer's model; `random_init`: the architecture and tokenizer only, random weights (speed does not
    depend on the weights: for a machine that has the config and tokenizer files but not the weights)."""
    import torch

    from recsys_fewshot.llm.causal import LanguageModel, load_causal_lm, resolve_dtype

    if random_init:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from recsys_fewshot.encoders.text_encoder import resolve_model_path

        path = resolve_model_path(LLMS.get(name, name))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)),
                                                 dtype=resolve_dtype("auto", torch.device(device))).to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        tokenizer.padding_side = "left"
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    else:
        model, tokenizer, path = load_causal_lm(LLMS.get(name, name), "auto")
    lm = LanguageModel(model.requires_grad_(False), tokenizer, 1024, batch_size)
    lm.set_answers("Yes", "No")
    return lm, path


def throughput(args) -> dict:
    import torch

    prompts = movie_prompts(args.prompts)
    lm, path = load_lm(args.llm, args.batch, args.random_init)
    tokens = sum(lm.count_tokens(prompts))
    with torch.no_grad():
        lm.answer_scores(prompts[: args.batch])  # warm up
        start = time.perf_counter()
        ours = lm.answer_scores(prompts)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        naive = torch.cat([lm.full_vocabulary_scores(prompts[k: k + args.batch])
                           for k in range(0, len(prompts), args.batch)])
        t_naive = time.perf_counter() - start
    result = {"llm": str(path), "prompts": len(prompts), "tokens": tokens, "batch": args.batch,
              "scorer_prompts_per_s": len(prompts) / t_ours, "naive_prompts_per_s": len(prompts) / t_naive,
              "speedup": t_naive / t_ours, "max_abs_score_diff": float((ours - naive).abs().max()),
              "peak_rss_gib": peak_rss_gib()}
    print(json.dumps(result, indent=1))
    return result


def lora_step(args) -> dict:
    import torch

    from recsys_fewshot.encoders import peft_wrap

    lm, path = load_lm(args.llm, args.batch, args.random_init)
    lm.model = peft_wrap.wrap(lm.model, "lora", {"r": 8, "alpha": 16, "dropout": 0.05}, 1,
                              kind=peft_wrap.ModelKind.CAUSAL_LM)
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    words = " ".join(["movie"] * args.tokens)
    prompts = [words] * args.batch
    n = lm.count_tokens(prompts[:1])[0]
    times = []
    for _ in range(args.steps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lm.answer_scores(prompts),
                                                                    torch.ones(args.batch, device=lm.device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"llm": str(path), "batch": args.batch, "tokens_per_prompt": n, "trainable": sum(p.numel() for p in params),
              "seconds_per_step": sorted(times)[len(times) // 2], "peak_rss_gib": peak_rss_gib(),
              **({"peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30} if torch.cuda.is_available() else {})}
    print(json.dumps(result, indent=1))
    return result


def run(out: Path, name: str, overrides: list[str]) -> dict:
    folder = out / name
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        log = out / f"{name}.log"
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "recsys_fewshot.train", *overrides, "logger=none",
               "trainer.progress=false", f"hydra.run.dir={folder}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        with open(log, "w") as handle:
            rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise SystemExit(f"{name} failed (exit {rc}): see {log}")
        rss = [line for line in log.read_text().splitlines() if "Maximum resident set size" in line]
        (folder / "peak_rss_kib").write_text(rss[-1].split(":")[-1].strip() if rss else "0")
    return json.loads(metrics.read_text())


def table(args) -> None:
    from recsys_fewshot.compare import compare

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.shots:
        for seed in args.seeds:
            base_name = f"fewshot_n{n}_s{seed}"
            run(out, base_name, ["protocol=tallrec_movie", "model=fewshot", f"split.n_shots={n}",
                                 f"split.seed={seed}", *args.extra])
            for method in args.methods:
                name = f"{method}_n{n}_s{seed}"
                extra = [*METHOD_ARGS.get(method, []), *([] if method in ("fewshot", "likerate") else [f"llm={args.llm}"])]
                m = run(out, name, ["protocol=tallrec_movie", f"model={method}", f"split.n_shots={n}",
                                    f"split.seed={seed}", *extra, *args.extra])
                versus = compare([out / name], [out / base_name], ["auc"], resamples=2000, seed=0)[1][0] \
                    if method != "fewshot" else None
                sec = m["seconds"]
                scored = (m.get("prompts") or {}).get("built", 0)
                rss = int((out / name / "peak_rss_kib").read_text() or 0) / 2 ** 20 \
                    if (out / name / "peak_rss_kib").is_file() else float("nan")
                rows.append({"method": method, "n": n, "seed": seed, "auc": m["test"]["auc"],
                             "vs_fewshot": None if versus is None else
                             {"diff": versus.diff, "low": versus.ci_low, "high": versus.ci_high, "p": versus.p_value,
                              "source_users": versus.users},
                             "train_s_per_sample": sec.get("train", 0) / max(m["split"]["train"], 1),
                             "s_per_prompt": (sec.get("train", 0) + sec.get("eval", 0)) / scored if scored else None,
                             "peak_rss_gib": rss})
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    print(f"| method | N | seed | test AUC | vs fewshot (95% CI, p) | train s/sample | s/prompt | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["vs_fewshot"]
        vs = "—" if v is None else f"{v['diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}], p={v['p']:.3f}"
        spp = "—" if r["s_per_prompt"] is None else f"{r['s_per_prompt']:.2f}"
        print(f"| {r['method']} | {r['n']} | {r['seed']} | {r['auc']:.4f} | {vs} | {r['train_s_per_sample']:.2f} "
              f"| {spp} | {r['peak_rss_gib']:.2f} |")
    print(f"TALLRec LLaMA-7B (published): {TALLREC}; standing goal: {GOAL}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--llm", default="gemma3-270m")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--random-init", action="store_true", help="the model's architecture with random weights")
    p = sub.add_parser("lora-step")
    p.add_argument("--llm", default="gemma3-270m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--random-init", action="store_true", help="the model's architecture with random weights")
    p = sub.add_parser("table")
    p.add_argument("--shots", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=["llm_zeroshot", "hybrid", "llm_lora", "llm_icl"])
    p.add_argument("--llm", default="gemma3-270m")
    p.add_argument("--out", default="outputs/bench_llm")
    args = parser.parse_args(argv)
    args.extra = extra
    {"throughput": throughput, "lora-step": lora_step, "table": table}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
