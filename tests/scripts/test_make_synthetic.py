"""The synthetic benchmark data: deterministic for a seed, unique pairs, and a signal in the text."""

import importlib.util
from pathlib import Path


SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_synthetic.py"
spec = importlib.util.spec_from_file_location("make_synthetic", SCRIPT)
make_synthetic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_synthetic)


def test_deterministic_unique_and_sized():
    a_inter, a_items = make_synthetic.generate(20_000, 2000, 1000, seed=3)
    b_inter, b_items = make_synthetic.generate(20_000, 2000, 1000, seed=3)
    c_inter, _ = make_synthetic.generate(20_000, 2000, 1000, seed=4)
    assert a_inter.equals(b_inter) and a_items.equals(b_items)
    assert not a_inter.equals(c_inter)
    assert len(a_inter) == 20_000
    assert not a_inter.duplicated(["user_id", "item_id"]).any()
    assert a_inter.user_id.between(0, 1999).all() and a_inter.item_id.between(0, 999).all()


def test_ratings_follow_the_topic_named_in_the_text():
    inter, items = make_synthetic.generate(30_000, 3000, 1000, seed=0)
    topic = items.set_index("item_id").genres
    frame = inter.assign(topic=topic.loc[inter.item_id].to_numpy())
    # topics (read from the text) a user keeps coming back to are their preferred ones: rated higher
    repeats = frame.groupby(["user_id", "topic"]).item_id.transform("size").to_numpy()
    on = repeats >= 3
    assert on.mean() > 0.3 and (repeats == 1).mean() > 0.05
    assert frame.rating[on].mean() > frame.rating[repeats == 1].mean() + 0.5


def test_cli_writes_plain_csv(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(sys, "argv", ["make_synthetic.py", str(tmp_path / "syn"), "--interactions", "5000",
                                      "--users", "1000", "--items", "500"])
    make_synthetic.main()
    import pandas as pd
    inter = pd.read_csv(tmp_path / "syn" / "interactions.csv")
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"] and len(inter) == 5000
    assert set(pd.read_csv(tmp_path / "syn" / "items.csv").columns) == {"item_id", "title", "genres"}
