"""Artifact digests: recorded once, any change to a file, or to the set of files, is refused."""

from pathlib import Path

import pytest

from ml.registry.integrity import IntegrityError, digest_tags, verify_folder


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "encoder").mkdir(parents=True)
    (folder / "heads.pt").write_bytes(b"\x00" * 100)
    (folder / "encoder" / "config.json").write_text("{}")
    return folder


def test_an_unchanged_folder_verifies(tmp_path):
    folder = _folder(tmp_path)
    tags = digest_tags(folder)
    assert set(tags) == {"artifact.sha256", "artifact.sha256.heads.pt", "artifact.sha256.encoder/config.json"}
    assert verify_folder(folder, tags) == tags["artifact.sha256"]


@pytest.mark.parametrize("change", ["edit", "remove", "add"])
def test_any_change_is_refused(tmp_path, change):
    folder = _folder(tmp_path)
    tags = digest_tags(folder)
    if change == "edit":
        (folder / "heads.pt").write_bytes(b"\x00" * 99 + b"\x01")
    elif change == "remove":
        (folder / "encoder" / "config.json").unlink()
    else:
        (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="differ from the digests"):
        verify_folder(folder, tags)


def test_a_version_without_digests_or_with_edited_tags_is_refused(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(IntegrityError, match="no artifact digests"):
        verify_folder(folder, {"gate.status": "passed"})
    tags = digest_tags(folder)
    tags["artifact.sha256.heads.pt"] = "0" * 64
    with pytest.raises(IntegrityError, match="do not add up"):
        verify_folder(folder, tags)
