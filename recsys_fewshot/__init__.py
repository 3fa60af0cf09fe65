"""Few-shot recommender experiments with language models (docs/design.md)."""


def load_run(run_dir, overrides=None):
    """A trained run folder, loaded to recommend with (`serving.TrainedRun`: `.recommend`, `.score`,
    `.similar_items`, `.item_vectors`); see docs/usage/recommend.md."""
    from recsys_fewshot.serving import load_run as load

    return load(run_dir, overrides)
