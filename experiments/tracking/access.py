"""What this process may do on the tracking store, checked before anything trains: a wrong
password or a missing permission is an error at start, never a run that stops halfway."""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds, read_mlflow_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

from experiments.tracking.store import (
    TrackingError,
    TrackingRefused,
    client,
    experiment_id,
    fail_fast,
    first_line,
    refusal,
    tracking_uri,
)

# The basic-auth app's REST endpoints; its Python client would import the server's Flask app
# (a second of start-up, and a dependency no node needs).
USERS_GET = "/api/2.0/mlflow/users/get"
PERMISSION_GET = "/api/3.0/mlflow/users/permissions/get"
# The permissions that grant each need. A run writes (EDIT); a study also deletes what it no
# longer needs, the checkpoints of trials and runs left over (MANAGE).
GRANTS = {"EDIT": ("EDIT", "MANAGE"), "MANAGE": ("MANAGE",)}
WHY = {
    "EDIT": "a run needs EDIT",
    "MANAGE": "a study needs MANAGE, since it deletes the checkpoints of trials it no longer needs",
}


def check_access(experiment_name: str, model: str | None = None, need: str = "EDIT") -> str:
    """The experiment's id (created if missing), once the store takes this process's
    credentials and, on a basic-auth server, its user holds `need` on the experiment and EDIT
    on `model` where that registered model exists; else TrackingRefused naming the server and
    what to set. Fails fast: a store that does not answer at start is an error, not an outage
    to wait out."""
    with fail_fast():
        try:
            exp_id = experiment_id(experiment_name)
            _check_permissions(exp_id, experiment_name, model, need)
        except MlflowException as e:
            raise refusal(e) or TrackingError(
                f"MLflow tracking store {tracking_uri()} is unusable: {first_line(e)}"
            ) from None
    return exp_id


def _check_permissions(exp_id: str, experiment_name: str, model: str | None, need: str) -> None:
    uri = tracking_uri()
    user = read_mlflow_creds().username
    if not uri.startswith(("http://", "https://")) or not user:
        return  # no basic-auth user: a local store, or a server that asked for none
    me = _get(USERS_GET, username=user)
    if me is None or me["user"]["is_admin"]:
        return  # a server without the basic-auth app, or an admin, who may do anything
    wanted = [("experiment", exp_id, f"experiment {experiment_name!r}", need)]
    if model and _registered(model):  # anyone may create a new one; it is then theirs
        wanted.append(("registered_model", model, f"registered model {model!r}", "EDIT"))
    for kind, resource_id, what, needed in wanted:
        got = _get(PERMISSION_GET, username=user, resource_type=kind, resource_id=resource_id)
        if got["permission"] not in GRANTS[needed]:
            raise TrackingRefused(
                f"the MLflow tracking server at {uri} gives user {user!r} {got['permission']} on "
                f"{what}, and {WHY[needed]}: its admin can grant it (docs/multi-node.md)"
            )


def _get(endpoint: str, **params: str) -> Any:
    """A basic-auth endpoint's JSON answer; None from a server without that app (404)."""
    response = http_request(get_default_host_creds(tracking_uri()), endpoint, "GET", params=params)
    if response.status_code == 404:
        return None
    return verify_rest_response(response, endpoint).json()


def _registered(name: str) -> bool:
    try:
        client().get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True
