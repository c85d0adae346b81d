import pytest

from ml.config import ConfigError, RunConfig, Settings


def test_flat_dp_params_map_onto_the_nested_config():
    cfg = RunConfig.from_dict({"source": "synthetic", "dp_enabled": False, "dp_target_epsilon": 3.0})
    assert cfg.dp.enabled is False and cfg.dp.target_epsilon == 3.0
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"source": "csv"}, "not one of"),
        ({"source": "amazon2018"}, "needs path"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"examples_per_user": -1}, "examples_per_user must be at least 1, or 0"),
        ({"batch_size": -2}, "batch_size must be at least 1, or 0"),
        ({"trainable_layers": 9}, "trainable_layers"),
        ({"dp": {"delta": 2.0}}, "delta must be in"),
        ({"dp": {"transitions_floor": -1}}, "transitions_floor must be in"),
        ({"colour": "red"}, "unknown run parameter"),
    ],
)
def test_bad_parameters_say_what_is_wrong(bad, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(bad)


def test_settings_from_env_keep_everything_under_home(tmp_path):
    s = Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_DEMO": "1"})
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.artifact_root.startswith("file://") and s.demo
    with pytest.raises(ConfigError):
        Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_PROFILE": "cloud"})


PROD = {
    "VETTED_PROFILE": "prod",
    "VETTED_POSTGRES_DSN": "postgresql://vetted:pw@postgres:5432/vetted",
    "VETTED_REDIS_URL": "redis://:pw@redis:6379/1",
    "MLFLOW_TRACKING_URI": "postgresql://mlflow:pw@postgres/mlflow",
}


def test_prod_settings_name_every_store(tmp_path):
    s = Settings.from_env(
        {
            **PROD,
            "VETTED_HOME": str(tmp_path),
            "VETTED_FEAST_PROJECT": "shop_a",
            "VETTED_ARTIFACT_ROOT": "s3://bucket/mlflow",
        }
    )
    assert s.profile == "prod" and s.tracking_uri == PROD["MLFLOW_TRACKING_URI"]
    assert s.artifact_root == "s3://bucket/mlflow" and s.feast_project == "shop_a"
    assert s.feast_dir == tmp_path / "feast" and s.lake_dir == tmp_path / "lake"
    # an MLflow server is a tracking store every worker reaches too; artifacts default to the shared home
    s = Settings.from_env({**PROD, "VETTED_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert s.artifact_root == (tmp_path / "mlartifacts").as_uri() and s.feast_project == "vetted"


@pytest.mark.parametrize("drop", ["VETTED_POSTGRES_DSN", "VETTED_REDIS_URL", "MLFLOW_TRACKING_URI"])
def test_prod_without_a_store_fails_before_any_stage(tmp_path, drop):
    env = {k: v for k, v in PROD.items() if k != drop}
    with pytest.raises(ConfigError, match=f"VETTED_PROFILE=prod needs {drop}"):
        Settings.from_env({**env, "VETTED_HOME": str(tmp_path)})


def test_prod_refuses_a_tracking_store_that_is_not_shared_and_malformed_urls(tmp_path):
    home = {"VETTED_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="not shared between workers"):
        Settings.from_env({**PROD, **home, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    with pytest.raises(ConfigError, match="VETTED_REDIS_URL=.*expected redis://"):
        Settings.from_env({**PROD, **home, "VETTED_REDIS_URL": "127.0.0.1:6379"})
    with pytest.raises(ConfigError, match="VETTED_POSTGRES_DSN=.*no database name") as err:
        Settings.from_env({**PROD, **home, "VETTED_POSTGRES_DSN": "postgresql://vetted:hunter2@postgres"})
    assert "hunter2" not in str(err.value)


def test_local_profile_ignores_prod_settings_and_checks_the_feast_project(tmp_path):
    s = Settings.from_env({"VETTED_HOME": str(tmp_path)})
    assert s.profile == "local" and s.feast_project == "vetted" and s.postgres_dsn == ""
    with pytest.raises(ConfigError, match="VETTED_FEAST_PROJECT"):
        Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_FEAST_PROJECT": "shop-a"})


def test_a_run_folder_keeps_no_store_password_and_a_worker_brings_its_own(tmp_path, monkeypatch):
    from ml.pipeline.context import RunContext

    env = {
        "VETTED_HOME": str(tmp_path),
        "VETTED_PROFILE": "prod",
        "VETTED_POSTGRES_DSN": "postgresql://vetted:pg-secret-1@db:5432/vetted",
        "VETTED_REDIS_URL": "redis://:redis-secret-2@redis:6379/1",
        "MLFLOW_TRACKING_URI": "postgresql://mlflow:ml-secret-3@db:5432/mlflow",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = RunContext.create(Settings.from_env(), RunConfig())
    written = (ctx.run_dir / "context.json").read_text()
    for secret in ("pg-secret-1", "redis-secret-2", "ml-secret-3"):
        assert secret not in written
    assert "postgresql://vetted:***@db:5432/vetted" in written

    loaded = RunContext.load(ctx.run_dir)  # a task on a worker with the same environment
    assert loaded.settings == ctx.settings

    monkeypatch.setenv("VETTED_REDIS_URL", "redis://:redis-secret-2@elsewhere:6379/1")
    with pytest.raises(ConfigError, match="VETTED_REDIS_URL.*not the store the run was created with"):
        RunContext.load(ctx.run_dir)
