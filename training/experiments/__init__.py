"""Experiments over many runs: the resumable evidence runner (:mod:`.evidence`), run records and
the results tables (:mod:`.results`), publishing a run to the Hub (:mod:`.publish`) and the
demo's example clips (:mod:`.make_examples`)."""
