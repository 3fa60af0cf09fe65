"""Few-shot recommender experiments with language models (docs/design.md)."""


def load_run(run_dir, overrides=None):
    """A trained run folder, loaded to recommend with (`serving.TrainedRun`: `.recommend`, `.score`,
    `.similar_items`, `.item_vectors`, `.add_items`; `history=` for users given by their history); see
    docs/usage/recommend.md."""
    from recsys_fewshot.serving import load_run as load

    return load(run_dir, overrides)
