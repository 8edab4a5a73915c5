"""The Model Registry: a run's logged model becomes a version of a registered model, and two
aliases say which version to load: `champion`, the best registered so far on the evidence, and
`challenger`, the latest version that did not beat it.

    mlflow.pyfunc.load_model("models:/fashion-lab@champion")   # raw pixels -> class names
    mlflow.pytorch.load_model("models:/fashion-lab@champion")  # the bare nn.Module

Each version carries the val accuracy it is ranked by (tag `val_accuracy`) and, when it comes
from a study's confirmation, the accuracy of each fresh seed behind it (`val_accuracy_seeds`,
a JSON list), so that a later version can be tested against it. A version takes `champion`
from the one holding it only on evidence of a gain beyond seed noise:
- both seeded: its mean is higher and Welch's t-test says so (p < 0.05);
- seeded, against a single-run champion: the low end of its 95% CI is above that run's value;
- a single run against a seeded champion: never (one run cannot show a gain beyond noise);
- single runs both: its value is higher (there is no spread to judge noise by).
A version without a val accuracy never becomes champion.

Registrations at once (two studies, nodes behind one tracking server) must not crown the worse
version, and no store offers a lock across them. So the champion is no comparison with
whatever held the alias a moment ago: it is recomputed from every version's tags, in the order
the versions were registered, by the rules above. Each registration writes its tags, then
recomputes and sets the aliases until the versions it read no longer change under it, so the
last registration to finish has seen them all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from experiments.stats import gain, mean_ci

CHAMPION, CHALLENGER = "champion", "challenger"
VAL_TAG, SEEDS_TAG = "val_accuracy", "val_accuracy_seeds"
# Each round sees at least one more finished registration than the one before it.
MAX_ROUNDS = 20


@dataclass(frozen=True)
class Registration:
    """Register a run's model as a version of `name`, ranked by `val_accuracy` (the run's own
    best_val_accuracy when None) and, where a confirmation gave them, its per-seed `seeds`;
    `basis` says where the value comes from."""

    name: str
    val_accuracy: float | None = None
    basis: str = ""
    seeds: tuple[float, ...] = ()


def add_version(model_uri: str, name: str) -> ModelVersion:
    """A new version of `name` (created on first use) pointing at the logged model's artifacts:
    registering uploads nothing."""
    return mlflow.register_model(model_uri, name)


def evidence(version: ModelVersion) -> tuple[float, ...]:
    """What a version is judged by: its seeds' val accuracies, or its one val accuracy, or
    nothing."""
    if SEEDS_TAG in version.tags:
        return tuple(json.loads(version.tags[SEEDS_TAG]))
    if VAL_TAG in version.tags:
        return (float(version.tags[VAL_TAG]),)
    return ()


def describe(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"val {values[0]:.4f} (one run)"
    mean, low, high = mean_ci(values)
    return f"val {mean:.4f} (mean of {len(values)} seeds, 95% CI [{low:.4f}, {high:.4f}])"


def beats(new: Sequence[float], champion: Sequence[float]) -> tuple[bool, str]:
    """Whether `new` beats `champion` beyond seed noise by the module's rules, and the numbers."""
    if len(new) > 1 and len(champion) > 1:
        g = gain(new, champion)
        return g.beyond_noise(), str(g)
    if len(new) > 1:
        low = mean_ci(new)[1]
        return low > champion[0], f"95% CI low end {low:.4f} vs its one run's {champion[0]:.4f}"
    if len(champion) > 1:
        return False, "one run cannot show a gain beyond the seed noise of a seeded champion"
    return new[0] > champion[0], f"{new[0]:.4f} vs {champion[0]:.4f}"


def standings(versions: Sequence[ModelVersion]) -> tuple[str | None, dict[str, str]]:
    """The champion of these versions, taken in the order they were registered, and for each
    version why it did or did not take the alias."""
    champion: ModelVersion | None = None
    why: dict[str, str] = {}
    for v in sorted(versions, key=lambda v: int(v.version)):
        mine, key = evidence(v), str(v.version)
        if not mine:
            why[key] = "no val accuracy to rank by: never champion"
        elif champion is None:
            champion, why[key] = v, f"{describe(mine)}: no champion before it"
        else:
            won, numbers = beats(mine, evidence(champion))
            verdict = "beats it beyond seed noise" if won else "does not beat it beyond seed noise"
            why[key] = f"{describe(mine)} vs champion v{champion.version}: {numbers}: {verdict}"
            champion = v if won else champion
    return (None if champion is None else str(champion.version)), why


def rank(c: MlflowClient, name: str, version: str, reg: Registration, val: float | None) -> str:
    """Tag `version` with its evidence, then set the aliases from every version's (see the
    module's docstring); its description says why, and so does the line returned. Run again
    after a failure part way, it finishes the job."""
    if val is not None:
        if reg.seeds:
            c.set_model_version_tag(name, version, SEEDS_TAG, json.dumps(list(reg.seeds)))
        c.set_model_version_tag(name, version, VAL_TAG, repr(val))
    version, seen = str(version), []
    for _ in range(MAX_ROUNDS):
        versions = c.search_model_versions(f"name = '{name}'")
        now = sorted((str(v.version), dict(v.tags)) for v in versions)
        if now == seen:
            break
        seen = now
        champion, why = standings(versions)
        aliases = {a: str(v) for a, v in c.get_registered_model(name).aliases.items()}
        if champion is not None and aliases.get(CHAMPION) != champion:
            c.set_registered_model_alias(name, CHAMPION, champion)
        if champion != version:
            c.set_registered_model_alias(name, CHALLENGER, version)
        elif aliases.get(CHALLENGER) == version:
            c.delete_registered_model_alias(name, CHALLENGER)
    text = why[version] + (f" ({reg.basis})" if reg.basis else "")
    c.update_model_version(name, version, description=text)
    return f"{name} v{version} @{CHAMPION if champion == version else CHALLENGER}: {text}"
