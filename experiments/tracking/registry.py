"""The Model Registry: a run's logged model becomes a version of a registered model, and two
aliases say which version to load: `champion`, the best val accuracy registered so far, and
`challenger`, the latest version that did not beat it.

    mlflow.pytorch.load_model("models:/fashion-lab@champion")
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER = "champion", "challenger"
# On each version: the val accuracy it was ranked by, so a later version compares with it even
# when it did not come from the run's own metrics (a retrained best trial).
VAL_TAG = "val_accuracy"


@dataclass(frozen=True)
class Registration:
    """Register a run's model as a version of `name`. It is ranked by `val_accuracy`, or by the
    run's own best_val_accuracy when None; `basis` says where a given value comes from."""

    name: str
    val_accuracy: float | None = None
    basis: str = ""


def add_version(model_uri: str, name: str) -> ModelVersion:
    """A new version of `name` (created on first use) pointing at the logged model's artifacts:
    registering uploads nothing."""
    return mlflow.register_model(model_uri, name)


def rank(c: MlflowClient, name: str, version: str, val: float | None, basis: str) -> str:
    """Give `version` the champion alias if its val accuracy beats the champion's, else the
    challenger alias; its description says why, and so does the line returned. Run again after
    a failure part way, it finishes the job: the alias, which decides, is set last."""
    aliases = c.get_registered_model(name).aliases
    held = [a for a, v in aliases.items() if str(v) == str(version)]
    if held:
        return f"{name} v{version} @{held[0]}"
    ours = "no val accuracy" if val is None else f"val {val:.4f}"
    ours += f" ({basis})" if basis else ""
    champion = aliases.get(CHAMPION)
    theirs = None if champion is None else c.get_model_version(name, champion).tags.get(VAL_TAG)
    if val is None:
        alias, why = CHALLENGER, f"{ours}: not compared with the champion; no val split to rank by"
    elif champion is None:
        alias, why = CHAMPION, f"{ours}: no champion yet"
    elif theirs is None:
        alias, why = CHALLENGER, f"{ours}: champion v{champion} has no {VAL_TAG} tag to beat"
    elif val > float(theirs):
        alias, why = CHAMPION, f"{ours} > champion v{champion} {float(theirs):.4f}"
    else:
        alias, why = CHALLENGER, f"{ours} <= champion v{champion} {float(theirs):.4f}"
    c.update_model_version(name, version, description=why)
    if val is not None:
        c.set_model_version_tag(name, version, VAL_TAG, repr(val))
    c.set_registered_model_alias(name, alias, version)
    return f"{name} v{version} @{alias}: {why}"
