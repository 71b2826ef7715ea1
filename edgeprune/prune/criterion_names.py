"""The pruning criteria by name, importable without torch, for the command line's choices. importance.py scores
each and registers exactly these names (tests/test_registries.py checks it)."""

RANKING_CRITERIA = (
    "l1",
    "bn",
    "taylor",
    "apoz",
    "thinet",
)  # rank channels: what `prune` and `build` offer as --criterion
# random scores from a seed: they make the latency table's variants and the baselines, never a ranking to ship
SEEDED_CRITERIA = ("random",)
CRITERION_NAMES = RANKING_CRITERIA + SEEDED_CRITERIA
