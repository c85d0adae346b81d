"""A run's files are checked before it starts (ml.gate.policy.preflight), so a bad policy fails in `prepare`,
not at the gate after training."""

from pathlib import Path

import pytest

from ml.gate.policy import PolicyError, preflight


def test_the_packaged_policy_and_no_files_pass():
    assert preflight(None, {"path": ""}).name
    assert preflight("", {"path": None}).name


def test_a_missing_policy_file_names_the_parameter(tmp_path: Path):
    with pytest.raises(PolicyError, match=r"parameter 'policy': policy file .*nowhere.yaml.* not found"):
        preflight(str(tmp_path / "nowhere.yaml"), {})


def test_a_broken_policy_is_refused_with_its_problems(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nchecks:\n  - name: q\n    metric: quality.ndcg_at_10\n    comparator: '>>'\n")
    with pytest.raises(PolicyError, match="(?s)parameter 'policy'.*field 'comparator'"):
        preflight(str(bad), {})


def test_every_problem_is_listed_at_once(tmp_path: Path):
    with pytest.raises(PolicyError) as err:
        preflight(str(tmp_path / "nowhere.yaml"), {"path": str(tmp_path / "no-folder")})
    assert "parameter 'policy'" in str(err.value) and "parameter 'path'" in str(err.value)


def test_an_existing_folder_passes_and_a_missing_one_fails(tmp_path: Path):
    assert preflight(None, {"path": str(tmp_path)}).name
    with pytest.raises(PolicyError, match="parameter 'path': .*does not exist"):
        preflight(None, {"path": str(tmp_path / "missing")})
