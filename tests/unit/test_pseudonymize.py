from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import pickle
import stat

import numpy as np
import pandas as pd
import pytest

from ml.privacy.pseudonymize import KEY_ENV, MissingKeyError, Pseudonymizer, load_key

KEY = b"0123456789abcdef"


def test_key_from_environment(tmp_path):
    key = load_key({KEY_ENV: "a-secret-of-twenty-chars"}, tmp_path, allow_demo_key=False)
    assert key == b"a-secret-of-twenty-chars"
    assert not (tmp_path / "secrets").exists()


def test_short_key_is_refused_with_the_rule(tmp_path):
    with pytest.raises(MissingKeyError, match="at least 16"):
        load_key({KEY_ENV: "short"}, tmp_path, allow_demo_key=True)


def test_missing_key_outside_demo_says_how_to_set_it(tmp_path):
    with pytest.raises(MissingKeyError) as err:
        load_key({}, tmp_path, allow_demo_key=False)
    assert KEY_ENV in str(err.value) and "vetted_pseudonym_key" in str(err.value)
    assert not (tmp_path / "secrets").exists()


def test_demo_key_file_is_private_and_reused(tmp_path):
    first = load_key({}, tmp_path, allow_demo_key=True)
    path = tmp_path / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first) == 64 and all(c in b"0123456789abcdef" for c in first)
    assert load_key({}, tmp_path, allow_demo_key=True) == first
    other_home = tmp_path / "other"
    assert load_key({}, other_home, allow_demo_key=True) != first


def test_environment_wins_over_demo_file(tmp_path):
    load_key({}, tmp_path, allow_demo_key=True)
    assert load_key({KEY_ENV: "x" * 16}, tmp_path, allow_demo_key=True) == b"x" * 16


def test_key_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "never-log-this-secret-value"
    load_key({KEY_ENV: secret}, tmp_path, allow_demo_key=False)
    demo = load_key({}, tmp_path, allow_demo_key=True)
    assert caplog.records, "loading a key should say where it came from"
    assert secret not in caplog.text and demo.decode() not in caplog.text


def test_pseudonym_is_stable_hmac_sha256():
    p = Pseudonymizer(KEY)
    # a fixed vector: pseudonyms must not change between releases, or serving loses every shopper's history
    assert p.pseudonym("alice") == "u_fdbf8b1cacd3d578e062d0e41104357d"
    assert p.pseudonym("alice") == "u_" + hmac.new(KEY, b"alice", hashlib.sha256).hexdigest()[:32]
    assert p.pseudonym("bob") != p.pseudonym("alice")
    assert Pseudonymizer(b"another-key-1234").pseudonym("alice") != p.pseudonym("alice")


def test_apply_replaces_the_column_in_a_new_frame():
    df = pd.DataFrame({"user_id": ["alice", None, "bob", np.nan, "alice"], "x": [1, 2, 3, 4, 5]})
    out = Pseudonymizer(KEY).apply(df)
    assert list(df["user_id"][:3]) == ["alice", None, "bob"]  # input untouched
    assert out["user_id"][0] == out["user_id"][4] == "u_fdbf8b1cacd3d578e062d0e41104357d"
    assert out["user_id"][1] is None and out["user_id"][3] is None
    assert out["user_id"][2].startswith("u_") and len(out["user_id"][2]) == 34
    assert list(out["x"]) == [1, 2, 3, 4, 5]


def test_apply_other_column_and_missing_column():
    df = pd.DataFrame({"shopper": ["alice"]})
    assert Pseudonymizer(KEY).apply(df, column="shopper")["shopper"][0].startswith("u_")
    with pytest.raises(KeyError, match="user_id"):
        Pseudonymizer(KEY).apply(df)


def test_key_does_not_leak_through_repr_or_pickle():
    p = Pseudonymizer(KEY)
    assert KEY.decode() not in repr(p) and KEY.decode() not in str(p)
    with pytest.raises(TypeError, match="secret"):
        pickle.dumps(p)
    with pytest.raises(TypeError):
        copy.deepcopy(p)


def test_empty_key_rejected():
    with pytest.raises(ValueError):
        Pseudonymizer(b"")
