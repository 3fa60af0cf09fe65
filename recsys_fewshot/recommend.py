"""`python -m recsys_fewshot.recommend run_dir=PATH [users=all|[id,id]|FILE] [k=20] [out=recs.parquet] ...`

Recommendations from a trained run, in the data set's raw ids (docs/usage/recommend.md):

  users=all|[id,id]|FILE k=20 out=recs.parquet   top-k per user: user_id, rank, item_id, score
  history=FILE [users=[id,id]]                   top-k for users given by their history (no retraining)
  items=FILE                                     items added after training (item_id + text columns, .csv)
  pairs=FILE out=scores.csv                      the score of each (user_id, item_id) pair (+ probability: ctr)
  similar=[id,id]|FILE k=10 out=similar.csv      most similar items: item_id, rank, similar_id, score
  export=DIR                                     item and user vectors with their raw ids

out= ends in .parquet, .csv or .jsonl (written in user chunks, then renamed into place); without out= the
rows are printed as CSV. exclude_known=true (the items the run's test ranking excluded: its training, valid
and support rows; for a history user, its history's items), false, or all (every interaction of the data
set). unknown=skip (unknown ids are counted, listed and left out) or error. explain=true adds `because` (up to
3 history items that contributed most) and `because_weight`. vectors=model|text: the item vectors similar=
compares (default: the head's item tower where it has one, else the encoder's text vectors). A users or
similar FILE is .txt (one id a line), .csv, .parquet or .jsonl (column user_id, or item_id for similar=); a
history FILE has user_id, item_id[, rating], a pairs FILE user_id, item_id. Other key=value arguments
override the saved config, as for evaluate (dataset.root=..., trainer.cpu=true, eval.chunk_size=...).
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from recsys_fewshot.serving_common import UNKNOWN_CHOICES, VECTOR_KINDS, ServeError, check_k
from recsys_fewshot.serving_io import check_out, command_args, read_ids, read_rows, write_rows

OWN_KEYS = ("run_dir", "users", "k", "out", "exclude_known", "unknown", "similar", "vectors", "export", "history",
            "items", "pairs", "explain")
MODES = ("similar", "export", "pairs")
log = logging.getLogger("recsys_fewshot.recommend")

RECOMMENDATIONS = {"user_id": "string", "rank": "int64", "item_id": "string", "score": "float32"}
SIMILAR = {"item_id": "string", "rank": "int64", "similar_id": "string", "score": "float32"}
PAIRS = {"user_id": "string", "item_id": "string", "score": "float32"}
EXPLAIN = {"because": "list<string>", "because_weight": "list<float32>"}


def parse_ids(value: str, key: str, column: str) -> Optional[list[str]]:
    """`all` (None), `[id,id]` (a list; ids are kept as written) or a FILE of ids."""
    value = value.strip()
    if value == "all":
        return None
    if value.startswith("["):
        if not value.endswith("]"):
            raise ServeError(f"{key}={value}: a list is written {key}=[id,id]")
        parts = [p.strip().strip("'\"") for p in value[1:-1].split(",")]
        return [p for p in parts if p]
    return read_ids(Path(value).expanduser(), key, column)


def flag(value: str, key: str):
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    if key == "exclude_known" and lowered == "all":
        return "all"
    raise ServeError(f"{key}={value}: expected true or false" + (" or all" if key == "exclude_known" else ""))


def check_request(own: dict[str, str]) -> dict:
    """Everything about the request, checked and read before the (slow) load: the files are read here, so a
    malformed one stops the command naming its file, column and line before the run folder is touched."""
    from recsys_fewshot.posted import history_table, read_items_file

    modes = [m for m in MODES if m in own]
    if len(modes) > 1:
        raise ServeError(f"{' and '.join(f'{m}=' for m in modes)} are separate commands: give one of them")
    unknown = own.get("unknown", "skip")
    if unknown not in UNKNOWN_CHOICES:
        raise ServeError(f"unknown={unknown}: expected skip or error")
    if own.get("vectors", "model") not in VECTOR_KINDS:
        raise ServeError(f"vectors={own['vectors']}: expected model or text")
    request = {"mode": modes[0] if modes else "recommend", "out": check_out(own.get("out")), "unknown": unknown,
               "k": check_k(own.get("k", "10" if "similar" in own else "20")),
               "exclude": flag(own.get("exclude_known", "true"), "exclude_known"),
               "explain": flag(own.get("explain", "false"), "explain"),
               "users": parse_ids(own.get("users", "all"), "users", "user_id")}
    if request["explain"] and request["mode"] in ("similar", "export"):
        raise ServeError(f"explain=true names the history items behind a user's scores: it goes with "
                         f"recommendations or pairs=, not {request['mode']}=")
    if "similar" in own:
        request["similar"] = parse_ids(own["similar"], "similar", "item_id")
        if request["similar"] is None:
            raise ServeError("similar=all is not offered: name the items, similar=[id,id] or a FILE")
    if "pairs" in own:
        request["pairs"] = read_rows(Path(own["pairs"]).expanduser(), "pairs", ["user_id", "item_id"])[0]
    if "history" in own:
        if request["mode"] in ("similar", "export"):
            raise ServeError(f"history= gives users to recommend for or score: not used by {request['mode']}=")
        path = Path(own["history"]).expanduser()
        frame, lines = read_rows(path, "history", ["user_id", "item_id"], ["rating"])
        history_table(frame, str(path), lines)  # the ratings: numbers, in float32
        request["history"] = (frame, str(path), lines)
    if "items" in own:
        request["items"] = Path(own["items"]).expanduser()
        read_items_file(request["items"])
    return request


def run(own: dict[str, str], overrides: list[str]) -> int:
    from recsys_fewshot.serving import load_run

    request = check_request(own)
    mode, out, k, unknown = request["mode"], request["out"], request["k"], request["unknown"]
    started = time.perf_counter()
    trained = load_run(Path(own["run_dir"]), overrides)
    if "items" in request:
        added = trained.add_items(request["items"])
        print(f"added {len(added)} items from {request['items']}", file=sys.stderr)
    posted = None
    if "history" in request:
        frame, where, lines = request["history"]
        posted = trained.post_history(frame, unknown, where, lines)
    loaded = time.perf_counter()
    explain = EXPLAIN if request["explain"] else {}
    if mode == "export":
        record = trained.export(Path(own["export"]))
        print(f"exported {', '.join(record['matrices'])} for {record['items']} items and {record['users']} users "
              f"to {own['export']}", file=sys.stderr)
        return 0
    if mode == "similar":
        frame = trained.similar_items(request["similar"], k, own.get("vectors"), unknown)
        rows = write_rows(out, [frame], SIMILAR)
        what = f"{frame['item_id'].nunique()} items"
    elif mode == "pairs":
        frame = trained.score(request["pairs"], unknown, explain=bool(explain), posted=posted)
        schema = {**PAIRS, **({"probability": "float32"} if trained.task == "ctr" else {}), **explain}
        rows = write_rows(out, [frame], schema)
        what = f"{len(frame)} pairs"
    elif posted is not None:
        own_users, slots, _ = trained.users_and_slots(request["users"], posted, unknown)
        frames = itertools.chain(
            trained.iter_recommendations(own_users, k, request["exclude"], explain=bool(explain))
            if len(own_users) else [],
            trained.iter_recommendations(slots, k, request["exclude"], explain=bool(explain), posted=posted))
        rows = write_rows(out, frames, {**RECOMMENDATIONS, **explain})
        what = f"{len(own_users) + len(slots)} users"
    else:
        chosen = trained.users(request["users"], unknown)
        rows = write_rows(out, trained.iter_recommendations(chosen, k, request["exclude"], explain=bool(explain)),
                          {**RECOMMENDATIONS, **explain})
        what = f"{len(chosen)} users"
    done = time.perf_counter()
    print(f"{rows} rows for {what}{f' written to {out}' if out else ''} (loaded in {loaded - started:.1f}s, "
          f"ranked in {done - loaded:.2f}s)", file=sys.stderr)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parsed = command_args(argv, __doc__, OWN_KEYS)
    if isinstance(parsed, int):
        return parsed
    own, overrides = parsed
    # this command's own warnings (unknown ids skipped, k beyond the catalogue) always reach stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("recommend: %(message)s"))
    log.addHandler(handler)
    propagate, log.propagate = log.propagate, False
    try:
        return run(own, overrides)
    except (ServeError, OSError, ValueError, KeyError) as err:  # errors name the file, key or id: no traceback
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"recommend: {message}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


if __name__ == "__main__":
    sys.exit(main())
