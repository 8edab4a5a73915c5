"""An MLflow tracking server that asks who is there (MLflow's basic-auth app), and its users.

python -m experiments.tracking.server serve               # make server: on 127.0.0.1:5000
python -m experiments.tracking.server add-user NAME [--read-only]

`serve` keeps its state in one folder (mlruns/server/): the auth app's ini and user database,
the tracking store and artifacts unless given others, and the two secrets it needs, each
generated once into a file of mode 600 unless the environment holds it: the Flask secret key
($MLFLOW_FLASK_SERVER_SECRET_KEY) and the admin's password ($MLFLOW_AUTH_ADMIN_PASSWORD, or
--admin-password-file). Secrets reach the server through its environment, which only its own
user can read, never through its command line, which every user of the machine can.
"""

from __future__ import annotations

import argparse
import configparser
import io
import os
import secrets
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from experiments.urls import has_password

FOLDER = Path("mlruns/server")
ADMIN = "admin"
# MLflow's own rules for the admin's password, checked here so that a bad one is an error
# before the server starts, not a traceback in its log.
MIN_PASSWORD = 12
OLD_DEFAULT = "password1234"


class ServerError(RuntimeError):
    """A setting the server or a new user cannot start with; the message says which."""


def write_private(path: Path, text: str) -> None:
    """A new file that only its owner can read; an existing one is never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def secret_file(path: Path, make: bool = True) -> str:
    """The secret in path, generated there (mode 600) the first time when make is set."""
    if not path.exists():
        if not make:
            raise ServerError(f"{path} does not exist")
        write_private(path, secrets.token_urlsafe(24) + "\n")
    if path.stat().st_mode & 0o077:
        raise ServerError(f"{path} can be read by other users of this machine: chmod 600 {path}")
    return path.read_text().strip()


def server_env(folder: Path, admin_password_file: Path | None) -> dict[str, str]:
    """The variables that make `mlflow server --app-name basic-auth` start, secrets included."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ini = folder / "basic_auth.ini"
    config = configparser.ConfigParser()
    config["mlflow"] = {
        # Every user may read every run and model; writing takes a grant (add-user).
        "default_permission": "READ",
        "database_uri": f"sqlite:///{(folder / 'basic_auth.db').resolve()}",
        "admin_username": ADMIN,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # Without it, every request costs a password hash (a tenth of a second of the server's
        # CPU), and a run makes hundreds. With one worker, a password changed through the API
        # leaves the cache at once.
        "auth_cache_ttl_seconds": "300",
    }
    with open(ini, "w") as f:
        config.write(f)
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini.resolve()),
        # Job execution (GenAI judges) would start eight more Python processes.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    if not env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secret_file(folder / "secret_key")
    if admin_password_file is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = secret_file(admin_password_file, make=False)
    elif not env.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = secret_file(folder / "admin_password")
    password = env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    if len(password) < MIN_PASSWORD or password == OLD_DEFAULT:
        raise ServerError(
            f"the admin password must have at least {MIN_PASSWORD} characters and not be the "
            "default of older MLflow versions"
        )
    return env


def serve(args: argparse.Namespace) -> None:
    """Replace this process with the server, so Ctrl-C and its exit code are the server's."""
    folder = args.dir
    store = args.backend_store_uri or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    if has_password(store):
        raise ServerError(
            "--backend-store-uri carries a password, which every user of this machine can read "
            "on the command line: remove it, and set PGPASSWORD or put it in ~/.pgpass"
        )
    env = server_env(folder, args.admin_password_file)
    artifacts = args.artifacts_destination or str((folder / "artifacts").resolve())
    url = f"http://{args.host}:{args.port}"
    where = args.admin_password_file or folder / "admin_password"
    if args.admin_password_file is None and os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        where = "$MLFLOW_AUTH_ADMIN_PASSWORD"
    print(
        f"MLflow server with basic auth: {url} (ready in about 10 s; Ctrl-C stops it)\n"
        f"admin: user {ADMIN!r}, password in {where} (it is set "
        "when the user database is new; later, change it with MLflow's update-password)\n"
        f"a user per person or node: python -m experiments.tracking.server add-user NAME "
        f"[--read-only] --url {url}\n"
        f"on every node: export MLFLOW_TRACKING_URI={url}, and the user's credentials file as "
        "~/.mlflow/credentials (mode 600) or $MLFLOW_TRACKING_USERNAME and "
        "$MLFLOW_TRACKING_PASSWORD",
        flush=True,
    )
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    cmd += ["--workers", "1", "--host", args.host, "--port", str(args.port)]
    cmd += ["--backend-store-uri", store, "--artifacts-destination", artifacts]
    os.execve(sys.executable, cmd, env)


def add_user(
    url: str,
    name: str,
    folder: Path = FOLDER,
    read_only: bool = False,
    experiments: Sequence[str] = ("fashion-lab",),
    model: str = "fashion-lab",
) -> Path:
    """Create user `name` with a generated password, as the admin, and grant it MANAGE on the
    experiments (a study deletes checkpoints it no longer needs) and EDIT on the registered
    model; or READ on both. Its credentials, in ~/.mlflow/credentials' format, go to a new
    file of mode 600, whose path is returned."""
    # Here, not at the top: the auth client imports the server's Flask app, a second of start.
    with warnings.catch_warnings():  # a deprecation inside MLflow's server, none of ours
        warnings.simplefilter("ignore")
        from mlflow.server.auth.client import AuthServiceClient
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.utils.credentials import read_mlflow_creds

    from experiments.tracking.store import environment, first_line

    admin = {}
    if read_mlflow_creds().username is None:  # else the caller said who the admin is
        admin = {
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": secret_file(folder / "admin_password", make=False),
        }
    users = folder / "users"
    users.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = users / f"{name}.credentials"
    if path.exists():
        raise ServerError(f"{path} exists: user {name!r} was added before")
    password = secrets.token_urlsafe(24)
    auth, tracking = AuthServiceClient(url), MlflowClient(url)
    try:
        with environment(admin):
            auth.create_user(name, password)
            for experiment in experiments:
                found = tracking.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found else tracking.create_experiment(experiment)
                grant = "READ" if read_only else "MANAGE"
                auth.grant_user_permission(name, "experiment", exp_id, grant)
            grant = "READ" if read_only else "EDIT"
            auth.grant_user_permission(name, "registered_model", model, grant)
    except MlflowException as e:
        raise ServerError(f"the MLflow server at {url} refused: {first_line(e)}") from None
    credentials = configparser.ConfigParser()
    credentials["mlflow"] = {"mlflow_tracking_username": name, "mlflow_tracking_password": password}
    text = io.StringIO()
    credentials.write(text)
    write_private(path, text.getvalue())
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.tracking.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, default=FOLDER, help="the server's state folder")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="start the server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument(
        "--backend-store-uri",
        default=None,
        help="the tracking store (default: DIR/mlflow.db); postgresql+psycopg2://user@host/db "
        "takes its password from PGPASSWORD or ~/.pgpass",
    )
    s.add_argument("--artifacts-destination", default=None, help="default: DIR/artifacts")
    s.add_argument(
        "--admin-password-file",
        type=Path,
        default=None,
        help="the admin's password (mode 600); default: $MLFLOW_AUTH_ADMIN_PASSWORD, else "
        "DIR/admin_password, generated the first time",
    )
    u = sub.add_parser("add-user", help="add a user with write (or read) access, as the admin")
    u.add_argument("name")
    u.add_argument("--url", default="http://127.0.0.1:5000", help="the server")
    u.add_argument("--read-only", action="store_true", help="READ: browse runs, load models")
    u.add_argument("--experiment", action="append", default=None, help="default: fashion-lab")
    u.add_argument("--model", default="fashion-lab", help="the registered model")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)  # returns only by raising: the process becomes the server
        path = add_user(
            args.url,
            args.name,
            args.dir,
            args.read_only,
            args.experiment or ["fashion-lab"],
            args.model,
        )
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    access = (
        "READ on the experiments and" if args.read_only else "MANAGE on the experiments, EDIT on"
    )
    print(
        f"user {args.name!r}: {access} registered model {args.model!r}; "
        f"its credentials are in {path} (mode 600). On its node: "
        f"install -m 600 {path} ~/.mlflow/credentials; export MLFLOW_TRACKING_URI={args.url}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
