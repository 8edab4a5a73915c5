"""Many machines, safely: MLflow's basic-auth server, started as `make server` starts it, over a
PostgreSQL tracking store, and a PostgreSQL study storage, both asking for passwords that come
from the environment or a file, never from a command line. The right credentials train and
tune; wrong or missing ones, and a read-only user, exit 2 before training, naming the service
and what to set; a password rotated mid-run stops the run at once with its checkpoint kept. No
secret is printed or recorded.

One server and one cluster for the module, both on 127.0.0.1; every secret is made per run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from conftest import FAST, MlflowServer, Postgres, call_main, printed
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED
from mlflow.tracking import MlflowClient
from test_tracking_outage import read_until, train_in

from experiments.tracking import OUTAGE_ENV
from experiments.tracking.outbox import Outbox
from experiments.tracking.server import add_user, server_env
from experiments.tracking.server import main as server_main
from experiments.tracking.store import environment
from train import main as train_main
from tune import main as tune_main

TINY = [*FAST, "--train-subset", "512", "--epochs", "1"]


@dataclass
class Team:
    url: str  # the tracking server
    study: str  # the study storage, without its password
    pgpassword: str
    folder: Path  # the server's state: its secrets, the users' credentials files
    users: dict[str, str]  # name -> password
    secrets: list[str]  # every one of them, and those that tests add
    champion: str = ""  # the writer's run, fashion-lab's champion

    def admin(self) -> dict[str, str]:
        password = (self.folder / "admin_password").read_text().strip()
        return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}


class AuthServer(MlflowServer):
    """experiments.tracking.server's `serve`, its store on PostgreSQL with PGPASSWORD."""

    def __init__(self, folder: Path, store: str, pgpassword: str) -> None:
        super().__init__(folder)
        self.store, self.pgpassword = store, pgpassword

    def command(self) -> list[str]:
        serve = ["serve", "--port", str(self.port), "--backend-store-uri", self.store]
        return [
            sys.executable,
            "-m",
            "experiments.tracking.server",
            "--dir",
            str(self.folder),
            *serve,
        ]

    def environment(self) -> dict[str, str]:
        env = {**super().environment(), "PGPASSWORD": self.pgpassword}
        for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
            env.pop(key, None)  # so that the server makes its own
        return env


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """The server, the cluster, five users (writer, reader, rotating; editor: EDIT on the
    experiment, where add-user grants MANAGE, and READ on the registered model; tuner: READ on
    the registered model) and a champion:
    a run by the writer, whose credentials are the file add-user wrote, as
    ~/.mlflow/credentials."""
    pg = Postgres(password=secrets.token_urlsafe(16))
    server = None
    try:
        pg.start()
        pgpassword = secrets.token_urlsafe(16)
        pg.execute("CREATE ROLE fl LOGIN PASSWORD %s", pgpassword)
        pg.execute("CREATE DATABASE mlflow OWNER fl")
        pg.execute("CREATE DATABASE optuna OWNER fl")
        folder = tmp_path_factory.mktemp("auth-server")
        store = pg.url("mlflow", user="fl").replace("postgresql:", "postgresql+psycopg2:")
        server = AuthServer(folder, store, pgpassword)
        server.start()
        users = {}
        with environment({"HOME": str(folder)}):  # no ~/.mlflow/credentials of this machine
            for name in ("writer", "reader", "rotating", "editor", "tuner"):
                path = add_user(server.url, name, folder, read_only=name == "reader")
                users[name] = path.read_text().split("mlflow_tracking_password = ")[1].strip()
        team = Team(server.url, pg.url("optuna", user="fl"), pgpassword, folder, users, [])
        with environment(team.admin()):
            from mlflow.server.auth.client import AuthServiceClient

            exp = MlflowClient(server.url).get_experiment_by_name("fashion-lab").experiment_id
            auth = AuthServiceClient(server.url)
            for user, kind, resource, grant in [
                ("editor", "experiment", exp, "EDIT"),
                ("editor", "registered_model", "fashion-lab", "READ"),
                ("tuner", "registered_model", "fashion-lab", "READ"),
            ]:
                auth.revoke_user_permission(user, kind, resource)
                auth.grant_user_permission(user, kind, resource, grant)
        key = (folder / "secret_key").read_text().strip()
        admin = team.admin()["MLFLOW_TRACKING_PASSWORD"]
        team.secrets += [pg.password, pgpassword, *users.values(), admin, key]

        home = folder / "writer-home"
        (home / ".mlflow").mkdir(parents=True)
        shutil.copy(folder / "users" / "writer.credentials", home / ".mlflow" / "credentials")
        with pytest.MonkeyPatch.context() as mp:
            login(mp, team, home)
            res = call_main(train_main, *TINY, "--register", "fashion-lab")
            assert res.returncode == 0, res.stdout + res.stderr
            assert "registered: fashion-lab v1 @champion" in res.stdout
            assert_no_secret(team, res.stdout, res.stderr)
            team.champion = printed(res.stdout, "run_id")
            assert_runs_hold_no_secret(team, [team.champion])
        yield team
    finally:
        if server is not None:
            server.stop()
        pg.stop()


def login(
    mp: pytest.MonkeyPatch,
    team: Team,
    home: Path,
    user: str | None = None,
    password: str | None = None,
    pgpassword: str | None = None,
) -> None:
    """This process and the CLIs it starts, as `user` of the tracking server."""
    mp.setenv("HOME", str(home))  # where ~/.mlflow/credentials is looked for
    mp.setenv("MLFLOW_TRACKING_URI", team.url)
    mlflow.set_tracking_uri(team.url)  # in-process runs set it too; it outranks the variable
    for key, value in [
        ("MLFLOW_TRACKING_USERNAME", user),
        ("MLFLOW_TRACKING_PASSWORD", password),
        ("PGPASSWORD", pgpassword),
    ]:
        if value is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)


def assert_no_secret(team: Team, *texts: object) -> None:
    text = "\n".join(map(str, texts))
    assert not [s for s in team.secrets if s in text]


def command_lines() -> list[str]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            lines.append(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def assert_runs_hold_no_secret(team: Team, run_ids: list[str]) -> None:
    c = MlflowClient(team.url)
    for run_id in run_ids:
        run = c.get_run(run_id)
        assert_no_secret(team, run.data.params, run.data.tags, run.info.run_name)


@pytest.mark.slow
def test_the_server_says_how_to_add_users_and_keeps_its_secrets_in_private_files(team):
    log = (team.folder / "server.log").read_text()
    assert "add-user NAME" in log and f"export MLFLOW_TRACKING_URI={team.url}" in log
    assert f"password in {team.folder / 'admin_password'}" in log
    assert_no_secret(team, log, (team.folder / "basic_auth.ini").read_text())
    private = ["admin_password", "secret_key", *(f"users/{u}.credentials" for u in team.users)]
    assert all((team.folder / p).stat().st_mode & 0o777 == 0o600 for p in private)


@pytest.mark.slow
def test_a_run_with_the_credentials_file_of_add_user_is_recorded(team, tmp_path, monkeypatch):
    login(monkeypatch, team, tmp_path, "reader", team.users["reader"])
    run = MlflowClient(team.url).get_run(team.champion)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics


@pytest.mark.slow
def test_a_two_worker_study_with_passwords_from_the_environment(team, tmp_path, monkeypatch):
    login(monkeypatch, team, tmp_path, "writer", team.users["writer"], team.pgpassword)
    args = ["--storage", team.study, "--study-name", "auth", "--n-trials", "2", "--workers", "2"]
    args += ["--pruner", "none", "--confirm-top", "0", "--output-dir", str(tmp_path)]
    res = call_main(tune_main, *TINY, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[w0] w0: joined study auth" in res.stdout and "[w1] w1: joined study auth" in res.stdout
    assert_no_secret(team, res.stdout, res.stderr, (tmp_path / "best.yaml").read_text())

    storage = optuna.storages.RDBStorage(team.study.replace("postgresql:", "postgresql+psycopg2:"))
    study = optuna.load_study(study_name="auth", storage=storage)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    study_id = storage.get_study_id_from_name("auth")
    assert_no_secret(team, study.user_attrs, storage.get_study_system_attrs(study_id))
    for t in study.trials:
        assert_no_secret(team, t.params, t.user_attrs, t.system_attrs)
    parent = printed(res.stdout, "parent_run_id")
    assert_runs_hold_no_secret(
        team, [parent, *(t.user_attrs["mlflow_run_id"] for t in study.trials)]
    )


# Who asks (user, password), and what the message must hold besides the server's URL.
REFUSALS = {
    "wrong MLflow password": (
        ("writer", "wrong"),
        ["refused the password of user 'writer'", "MLFLOW_TRACKING_PASSWORD"],
    ),
    "no MLflow password": (
        ("writer", None),
        ["refused user 'writer': no password is set", "MLFLOW_TRACKING_PASSWORD"],
    ),
    "no MLflow user": (
        (None, None),
        ["asks for credentials and none are set", "MLFLOW_TRACKING_USERNAME"],
    ),
    "read-only user": (
        ("reader", "right"),
        ["gives user 'reader' READ on experiment 'fashion-lab'", "its admin can grant it"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", REFUSALS)
@pytest.mark.parametrize("tool", ["train", "tune"])
def test_refused_by_the_tracking_server_exits_2_before_training(
    team, tmp_path, monkeypatch, case, tool
):
    (user, password), says = REFUSALS[case]
    if password == "wrong":
        password = secrets.token_urlsafe(16)
        team.secrets.append(password)
    elif password == "right":
        password = team.users[user]
    login(monkeypatch, team, tmp_path, user, password, team.pgpassword)
    if tool == "train":
        res = call_main(train_main, *TINY)
    else:
        res = call_main(tune_main, *TINY, "--storage", team.study, "--study-name", "refused")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"error: the MLflow tracking server at {team.url} ")
    assert all(s in res.stderr for s in says), res.stderr
    assert "epoch " not in res.stdout and "Traceback" not in res.stderr
    assert_no_secret(team, res.stdout, res.stderr)


@pytest.mark.slow
def test_a_study_needs_manage_on_the_experiment_to_delete_what_it_no_longer_needs(
    team, tmp_path, monkeypatch
):
    login(monkeypatch, team, tmp_path, "editor", team.users["editor"], team.pgpassword)
    res = call_main(tune_main, *TINY, "--storage", team.study, "--study-name", "refused")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "gives user 'editor' EDIT on experiment 'fashion-lab', and a study needs MANAGE" in (
        res.stderr
    )


@pytest.mark.slow
def test_register_needs_edit_on_the_registered_model_it_adds_a_version_to(
    team, tmp_path, monkeypatch
):
    login(monkeypatch, team, tmp_path, "editor", team.users["editor"])
    res = call_main(train_main, *TINY, "--register", "fashion-lab")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "gives user 'editor' READ on registered model 'fashion-lab', and a run needs EDIT" in (
        res.stderr
    )
    assert "epoch " not in res.stdout


@pytest.mark.slow
def test_a_study_that_retrains_and_registers_needs_edit_on_the_registered_model_at_start(
    team, tmp_path, monkeypatch
):
    login(monkeypatch, team, tmp_path, "tuner", team.users["tuner"], team.pgpassword)
    args = ["--storage", team.study, "--study-name", "refused", "--retrain-best"]
    res = call_main(tune_main, *TINY, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "gives user 'tuner' READ on registered model 'fashion-lab', and a run needs EDIT" in (
        res.stderr
    )
    assert "trial 0 starts" not in res.stdout


@pytest.mark.slow
def test_add_user_says_which_server_refused_the_admin(team, tmp_path, monkeypatch):
    wrong = secrets.token_urlsafe(16)
    team.secrets.append(wrong)
    login(monkeypatch, team, tmp_path, "admin", wrong)
    argv = ["--dir", str(team.folder), "add-user", "nobody", "--url", team.url]
    res = call_main(server_main, *argv)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"error: the MLflow server at {team.url} refused: ")
    assert "401" in res.stderr and not (team.folder / "users" / "nobody.credentials").exists()
    assert_no_secret(team, res.stdout, res.stderr)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pgpassword", "database", "says"),
    [
        ("wrong", "optuna", 'password authentication failed for user "fl"'),
        (None, "optuna", "no password supplied"),
        ("right", "nope", 'database "nope" does not exist'),
    ],
)
def test_refused_by_the_study_storage_exits_2_before_training(
    team, tmp_path, monkeypatch, pgpassword, database, says
):
    if pgpassword == "wrong":
        pgpassword = secrets.token_urlsafe(16)
        team.secrets.append(pgpassword)
    elif pgpassword == "right":
        pgpassword = team.pgpassword
    login(monkeypatch, team, tmp_path, "writer", team.users["writer"], pgpassword)
    storage = team.study.replace("/optuna", f"/{database}")
    res = call_main(tune_main, *TINY, "--storage", storage, "--study-name", "refused")
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr and storage in res.stderr and "Traceback" not in res.stderr
    if database == "optuna":
        assert res.stderr.startswith(f"error: the PostgreSQL study storage {storage} refused")
        assert "set PGPASSWORD, or put the password in ~/.pgpass" in res.stderr
    assert_no_secret(team, res.stdout, res.stderr)


@pytest.mark.slow
def test_a_refused_resume_says_so_rather_than_no_such_run(team, tmp_path, monkeypatch):
    login(monkeypatch, team, tmp_path, "writer", None)
    res = call_main(train_main, "--resume", team.champion)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refused user 'writer': no password is set" in res.stderr
    assert "no MLflow run" not in res.stderr


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_refused(team, tmp_path, monkeypatch):
    login(monkeypatch, team, tmp_path)
    password = team.users["writer"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url.replace("//", f"//writer:{password}@"))
    res = call_main(train_main, *TINY)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: $MLFLOW_TRACKING_URI carries a password: remove it")
    assert_no_secret(team, res.stdout, res.stderr)


@pytest.mark.slow
def test_a_read_only_user_browses_runs_and_loads_the_champion_but_cannot_move_it(
    team, tmp_path, monkeypatch
):
    login(monkeypatch, team, tmp_path, "reader", team.users["reader"])
    c = MlflowClient(team.url)
    experiment = c.get_experiment_by_name("fashion-lab").experiment_id
    assert team.champion in {r.info.run_id for r in c.search_runs([experiment])}
    model = mlflow.pytorch.load_model("models:/fashion-lab@champion")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    for move in (
        lambda: c.set_registered_model_alias("fashion-lab", "champion", "1"),
        lambda: c.delete_registered_model_alias("fashion-lab", "champion"),
    ):
        with pytest.raises(MlflowException) as refused:
            move()
        assert refused.value.error_code == "PERMISSION_DENIED"
    assert c.get_registered_model("fashion-lab").aliases == {"champion": "1"}


@pytest.mark.slow
def test_a_password_rotated_mid_run_stops_it_at_once_with_its_checkpoint_kept(
    team, tmp_path, monkeypatch
):
    # An outage limit no test waits out: only a refusal that stops the run at once passes.
    monkeypatch.setenv(OUTAGE_ENV, "3600")
    login(monkeypatch, team, tmp_path, "rotating", team.users["rotating"])
    proc, seen = train_in(tmp_path, *TINY, "--epochs", "4"), []
    run_id = read_until(proc, "mlflow_run_id:", seen).split()[-1]
    read_until(proc, "epoch 1/", seen)
    # Paused, so the new password is in force before the run's next request, however fast.
    proc.send_signal(signal.SIGSTOP)
    # What `ps` shows of every process, this run's, the servers' and their workers' among them.
    assert_no_secret(team, *command_lines())
    new = secrets.token_urlsafe(16)
    team.secrets.append(new)
    with environment(team.admin()):
        from mlflow.server.auth.client import AuthServiceClient

        AuthServiceClient(team.url).update_user_password("rotating", new)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=300)
    text = "".join(seen) + out
    assert proc.returncode == 1, text
    assert f"the MLflow tracking server at {team.url} refused the password of user" in text
    assert f"Run {run_id} stopped after epoch" in text and "has failed for" not in text
    assert_no_secret(team, text)
    # Where an outage leaves it, naming its run: `train.py --resume` takes it from there, as
    # test_tracking_outage proves.
    checkpoint = Path(text.split("continue it with: python train.py --resume ")[1].split()[0])
    assert checkpoint == tmp_path / "mlruns" / "unsent" / run_id / "last.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["mlflow_run_id"] == run_id and 1 <= state["epoch"] < 4


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (UNAUTHENTICATED, "refused the password of user 'w'"),
        (PERMISSION_DENIED, "denies user 'w' a request this run needs"),
    ],
)
def test_a_refusal_expires_the_outbox_at_once(monkeypatch, tmp_path, code, says):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "w")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    outbox = Outbox(limit_s=3600)

    def send() -> None:
        raise MlflowException("refused", error_code=code)

    outbox.put("metrics", send)
    assert not outbox.flush() and outbox.expired()
    assert says in str(outbox.refused) and "pw" not in str(outbox.refused)


def test_a_store_that_does_not_answer_is_an_outage_not_a_refusal():
    outbox = Outbox(limit_s=3600)

    def send() -> None:
        raise OSError("connection refused")

    outbox.put("metrics", send)
    assert not outbox.flush() and not outbox.expired() and outbox.refused is None


def test_the_server_makes_its_secrets_once_in_private_files_and_none_in_the_ini(
    tmp_path, monkeypatch
):
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    env = server_env(tmp_path, None)
    admin, key = (tmp_path / "admin_password").read_text(), (tmp_path / "secret_key").read_text()
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == admin.strip() and len(admin.strip()) >= 12
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == key.strip()
    assert (tmp_path / "admin_password").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    ini = (tmp_path / "basic_auth.ini").read_text()
    assert (
        admin.strip() not in ini and key.strip() not in ini and "default_permission = READ" in ini
    )
    assert server_env(tmp_path, None)["MLFLOW_AUTH_ADMIN_PASSWORD"] == admin.strip()

    given = secrets.token_urlsafe(16)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", given)
    assert server_env(tmp_path / "other", None)["MLFLOW_AUTH_ADMIN_PASSWORD"] == given
    assert not (tmp_path / "other" / "admin_password").exists()


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--backend-store-uri", "postgresql://fl:{pw}@127.0.0.1/mlflow"], "PGPASSWORD"),
        (["--admin-password-file", "{short}"], "at least 12 characters"),
        (["--admin-password-file", "{old_default}"], "not be the default"),
        (["--admin-password-file", "{readable}"], "can be read by other users"),
        (["--admin-password-file", "{missing}"], "does not exist"),
    ],
)
def test_the_server_refuses_to_start_with_an_exposed_or_weak_secret(tmp_path, capsys, args, says):
    pw = secrets.token_urlsafe(16)
    files = {
        "pw": pw,
        "short": private(tmp_path / "short", "pw-short"),
        "old_default": private(tmp_path / "old_default", "password1234\n"),
        "readable": private(tmp_path / "readable", pw, 0o644),
        "missing": tmp_path / "missing",
    }
    argv = ["--dir", str(tmp_path / "server"), "serve", *(a.format(**files) for a in args)]
    assert server_main(argv) == 2  # returned: the server was never started
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and says in err and pw not in out + err


def test_add_user_refuses_a_user_it_added_before_and_needs_the_admin(tmp_path, capsys, monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ["--dir", str(tmp_path), "add-user", "bob", "--url", "http://127.0.0.1:9"]
    assert server_main(argv) == 2
    assert "admin_password does not exist" in capsys.readouterr().err
    private(tmp_path / "admin_password", secrets.token_urlsafe(16))
    private(tmp_path / "users" / "bob.credentials", "[mlflow]\n")
    assert server_main(argv) == 2
    assert "user 'bob' was added before" in capsys.readouterr().err
