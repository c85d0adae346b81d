import pytest

from ml.config import ConfigError, RunConfig, Settings


def test_flat_dp_params_map_onto_the_nested_config():
    cfg = RunConfig.from_dict({"source": "synthetic", "dp_enabled": False, "dp_target_epsilon": 3.0})
    assert cfg.dp.enabled is False and cfg.dp.target_epsilon == 3.0
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad, match", [
    ({"source": "csv"}, "not one of"),
    ({"source": "amazon2018"}, "needs path"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"trainable_layers": 9}, "trainable_layers"),
    ({"dp": {"delta": 2.0}}, "delta must be in"),
    ({"colour": "red"}, "unknown run parameter"),
])
def test_bad_parameters_say_what_is_wrong(bad, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(bad)


def test_settings_from_env_keep_everything_under_home(tmp_path):
    s = Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_DEMO": "1"})
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.artifact_root.startswith("file://") and s.demo
    with pytest.raises(ConfigError):
        Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_PROFILE": "cloud"})
