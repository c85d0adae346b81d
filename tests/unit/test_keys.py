"""The one loader of the pseudonym key and the API key: caller, environment, demo file, or a clear refusal."""

from __future__ import annotations

import logging
import stat

import pytest

from ml.keys import (
    API_KEY,
    PSEUDONYM_KEY,
    MissingApiKeyError,
    MissingKeyError,
    load_api_key,
    load_pseudonym_key,
)

KEY_ENV = PSEUDONYM_KEY.env


def test_key_from_environment(tmp_path):
    key = load_pseudonym_key({KEY_ENV: "a-secret-of-twenty-chars"}, tmp_path, allow_demo_key=False)
    assert key == b"a-secret-of-twenty-chars"
    assert not (tmp_path / "secrets").exists()


def test_short_key_is_refused_with_the_rule(tmp_path):
    with pytest.raises(MissingKeyError, match="at least 16"):
        load_pseudonym_key({KEY_ENV: "short"}, tmp_path, allow_demo_key=True)


def test_missing_key_outside_demo_says_how_to_set_it(tmp_path):
    with pytest.raises(MissingKeyError) as err:
        load_pseudonym_key({}, tmp_path, allow_demo_key=False)
    assert KEY_ENV in str(err.value) and "vetted_pseudonym_key" in str(err.value)
    assert not (tmp_path / "secrets").exists()


def test_demo_key_file_is_private_and_reused(tmp_path):
    first = load_pseudonym_key({}, tmp_path, allow_demo_key=True)
    path = tmp_path / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first) == 64 and all(c in b"0123456789abcdef" for c in first)
    assert load_pseudonym_key({}, tmp_path, allow_demo_key=True) == first
    other_home = tmp_path / "other"
    assert load_pseudonym_key({}, other_home, allow_demo_key=True) != first


def test_environment_wins_over_demo_file(tmp_path):
    load_pseudonym_key({}, tmp_path, allow_demo_key=True)
    assert load_pseudonym_key({KEY_ENV: "x" * 16}, tmp_path, allow_demo_key=True) == b"x" * 16


def test_key_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "never-log-this-secret-value"
    load_pseudonym_key({KEY_ENV: secret}, tmp_path, allow_demo_key=False)
    demo = load_pseudonym_key({}, tmp_path, allow_demo_key=True)
    assert caplog.records, "loading a key should say where it came from"
    assert secret not in caplog.text and demo.decode() not in caplog.text


def test_a_key_the_caller_gives_wins_and_is_checked(tmp_path):
    given = "from-an-airflow-connection-0123"
    assert load_pseudonym_key({KEY_ENV: "x" * 16}, tmp_path, allow_demo_key=False, value=given) == given.encode()
    with pytest.raises(MissingKeyError, match="from the caller has 5 characters"):
        load_pseudonym_key({KEY_ENV: "x" * 16}, tmp_path, allow_demo_key=False, value="short")
    assert not (tmp_path / "secrets").exists()


def test_the_api_key_has_its_own_variable_file_and_error(tmp_path):
    assert load_api_key({API_KEY.env: "k" * 20}, tmp_path, allow_demo_key=False) == "k" * 20
    with pytest.raises(MissingApiKeyError, match="VETTED_API_KEY"):
        load_api_key({KEY_ENV: "x" * 20}, tmp_path, allow_demo_key=False)  # the pseudonym key is not an API key
    demo = load_api_key({}, tmp_path, allow_demo_key=True)
    assert (tmp_path / "secrets" / "api.key").read_text() == demo
    assert load_pseudonym_key({}, tmp_path, allow_demo_key=True).decode() != demo  # each secret its own file


def test_a_truncated_demo_file_is_refused(tmp_path):
    path = PSEUDONYM_KEY.demo_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("abc")
    with pytest.raises(MissingKeyError, match="delete it"):
        load_pseudonym_key({}, tmp_path, allow_demo_key=True)
