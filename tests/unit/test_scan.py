from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.privacy import scan
from ml.privacy.pii import CARD, EMAIL, PHONE, PIIScrubber
from ml.privacy.scan import RAW_ID, PIIFinding, RawIdMatcher, scan_paths, scan_texts

RAW_IDS = ["A2X3Y4Z5QQ", "AB12CD34EF", "user-0042"]
PSEUDONYM = "u_c5da39fa60c52e73cd3ef3e061c63a6e"
EMAIL_VALUE = "jane.doe@example.com"
PHONE_VALUE = "+44 20 7946 0958"
CARD_VALUE = "4111 1111 1111 1111"

LIBRARY_JS = (
    "var iOe=Object.defineProperty;/*! (c) 2013 Jake Luer <jake@alogicalparadox.com> */"
    'function f(e){return e<.2823529411764706?"#3b528b":"call 212-431-6100 or support@lib.example"}'
    'var v="v1.2.3.4",p="M12.22,4.48,1.16.1.5,2.79-.46";'
)


def evidently_like_html(reference: list[str], library_repeats: int = 200) -> str:
    """The shape of an Evidently 0.7 report: a JSON payload script, then a big minified library script."""
    payload = {
        "name": "Report",
        "widgets": [
            {
                "title": "Data Drift",
                "id": "01a2023e-bc1e-7f8d-91e5-efb168038eeb",
                "params": {
                    "data": [
                        {
                            "column_name": "query",
                            "reference_distribution": {"x": reference, "y": [3] * len(reference)},
                            "drift_score": 0.0881234567,
                            "stattest_name": "chi-square p_value",
                        }
                    ]
                },
            }
        ],
    }
    return textwrap.dedent(
        f"""\
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><style>body {{ color: #333333; }} .p {{ width: 212px; }}</style>
        </head><body>
        <h1>Data drift</h1><p>Drift share 0.25 of 4 columns &mdash; created 2024-05-01 12:30:45</p>
        <div id="root_metric_1c92"></div>
        <script>
            var metric_1c92 = {json.dumps(payload)};
            var additional_graphs_metric_1c92 = {{}};
        </script>
        <script>var global = globalThis</script>
        <script>{LIBRARY_JS * library_repeats}</script>
        <script>window.drawDashboard(metric_1c92, new Map(Object.entries(additional_graphs_metric_1c92)),
            "root_metric_1c92");</script>
        </body></html>
        """
    )


def write_clean_corpus(root: Path) -> None:
    """What a run's artifacts look like: model files, mappings, reports, metrics; no PII, no raw id."""
    model = root / "model"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        "    python_version: 3.11.9\nmlflow_version: 3.17.2\nmodel_uuid: 4f0c8d1e2a3b4c5d6e7f8091a2b3c4d5\n"
        "run_id: 9a8b7c6d5e4f30211203f4e5d6c7b8a9\nutc_time_created: '2024-05-01 12:30:45.123456'\n"
    )
    (model / "requirements.txt").write_text(
        "mlflow==3.17.2\ntorch==2.13.0\nfaiss-cpu==1.12.0\nnumpy==2.4.6\n"
    )
    (model / "conda.yaml").write_text(
        "channels: [conda-forge]\ndependencies:\n- python=3.11.9\n- pip<=25.1\n"
    )
    (model / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", *map(str, range(3000)), "##5", "call"]))
    (model / "config.json").write_text(
        json.dumps({"hidden_size": 384, "layer_norm_eps": 1e-12, "vocab": 30522})
    )
    items = {f"B00{i:07d}": i for i in range(500)} | {"0312353901": 500}
    (model / "item_index.json").write_text(json.dumps(items, indent=1))
    users = [{"pseudonym": PSEUDONYM, "n_events": 12}, {"pseudonym": "u_" + "0" * 32, "n_events": 3}]
    (model / "users.jsonl").write_text("\n".join(json.dumps(u) for u in users) + "\n")
    titles = [
        "M8 x 1.25 bolt, 50-pack, 3/8-inch",
        "ISO 9001 2015 certified gloves",
        "1/4 Inch Drive Socket Set 12 pc",
        "Shop-Vac 9064900 2-1/2-Inch Diameter Vacuum Hose",
        "near misses of raw ids: u_A2X3Y4Z5QQ A2X3Y4Z5QQ1 user-00421",
    ]
    pd.DataFrame({"item_id": [f"i{i}" for i in range(5)], "title": titles}).to_csv(
        model / "items.csv", index=False
    )
    pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(5)], "title": titles, "price": [1.5, 2.0, 3.25, 4.0, 5.0]}
    ).to_parquet(model / "items.parquet")
    (model / "code.py").write_text("def top(x):\n    return x[::2]  # ndcg 0.0881234567\n")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file(
        {"encoder.layer.0.weight": rng.normal(size=(64, 64)).astype(np.float32)}, model / "model.safetensors"
    )
    np.save(model / "item_embeddings.npy", rng.normal(size=(100, 16)).astype(np.float32))
    (model / "index.faiss").write_bytes(rng.bytes(50_000))
    reports = root / "reports"
    reports.mkdir()
    (reports / "drift.html").write_text(evidently_like_html(["bolt m8 pack", "gloves size 9"]))
    (root / "model_card.md").write_text(
        "# Model card\n\n| metric | value |\n|---|---|\n| NDCG@10 | 0.0881 |\n| epsilon | 7.99 at delta 1.5e-04 |\n"
        "\nTrained 2024-05-01 on 2,000 shoppers; noise multiplier 0.78, 60 steps, sample rate 0.085.\n"
    )
    (root / "summary.json").write_text(json.dumps({"quality.ndcg_at_10": 0.0881234567, "ts": 1721234567}))


@pytest.fixture(scope="module")
def scrubber() -> PIIScrubber:
    return PIIScrubber()


def kinds_and_locations(findings: list[PIIFinding]) -> list[tuple[str, str]]:
    return sorted((f.location, f.kind) for f in findings)


def assert_redacted(findings: list[PIIFinding], *secrets: str) -> None:
    for f in findings:
        for secret in secrets:
            assert secret not in f.excerpt


# ----------------------------------------------------------------------------------------------- scan_texts
def test_texts_clean(scrubber):
    texts = {
        "param:lr": "0.001",
        "param:epsilon": "8.0",
        "tag:privacy.delta": "1.5e-04",
        "tag:user": PSEUDONYM,
    }
    assert scan_texts(texts, scrubber, RAW_IDS) == []


def test_texts_planted(scrubber):
    texts = {
        "param:lr": "0.001",
        "param:note": f"ask {EMAIL_VALUE} about it",
        "tag:x": "trained for A2X3Y4Z5QQ, see log",
        "tag:y": "hello user-0042!",
    }
    findings = scan_texts(texts, scrubber, RAW_IDS)
    assert kinds_and_locations(findings) == [("param:note", EMAIL), ("tag:x", RAW_ID), ("tag:y", RAW_ID)]
    by_location = {f.location: f.excerpt for f in findings}
    assert by_location["param:note"] == "ask <EMAIL_ADDRESS> about it"
    assert by_location["tag:x"] == "trained for <RAW_ID>, see log"
    assert_redacted(findings, EMAIL_VALUE, "A2X3Y4Z5QQ", "user-0042")


def test_raw_ids_match_whole_tokens_only():
    matcher = RawIdMatcher(["A2X3Y4Z5QQ", "user-0042", "42"])
    assert matcher.skipped == 1  # "42" is too short to tell from an ordinary number
    text = "A2X3Y4Z5QQ u_A2X3Y4Z5QQ A2X3Y4Z5QQ1 (A2X3Y4Z5QQ) user-0042 user-00421 xuser-0042 42"
    assert [text[s:e] for s, e in matcher.find(text)] == ["A2X3Y4Z5QQ", "A2X3Y4Z5QQ", "user-0042"]
    data = text.encode()
    assert [data[s:e] for s, e in matcher.find_bytes(data)] == [b"A2X3Y4Z5QQ", b"A2X3Y4Z5QQ", b"user-0042"]


def test_raw_ids_with_punctuation_at_the_edge():
    matcher = RawIdMatcher(["#cust9", "Müller77"])
    text = "ids #cust9, x#cust9y and Müller77."
    assert [text[s:e] for s, e in matcher.find(text)] == ["#cust9", "Müller77"]
    data = text.encode()
    assert [data[s:e].decode() for s, e in matcher.find_bytes(data)] == ["Müller77"]  # 6 bytes, unquoted: no
    data = b'{"ids": ["#cust9"]}'
    assert [data[s:e].decode() for s, e in matcher.find_bytes(data)] == ["#cust9"]


def test_short_raw_ids_in_binary_count_only_when_stored_as_strings():
    matcher = RawIdMatcher(["A4042", "A2X3Y4Z5QQ"])
    noise = np.random.default_rng(0).bytes(1000)
    loose = noise + b"\x00A4042\x00" + noise  # five letters between two zero bytes: chance in a weight file
    assert matcher.find_bytes(loose) == []
    for protocol in (2, 4):  # torch.save pickles with protocol 2 (BINUNICODE), pickle's default is 4 or 5
        data = noise + pickle.dumps(["A4042", "other"], protocol=protocol) + noise
        assert [data[s:e] for s, e in matcher.find_bytes(data)] == [b"A4042"]
    data = (
        noise + b'{"user": "A4042"}' + noise + b"\x00A2X3Y4Z5QQ\x00"
    )  # quoted; long enough to count anywhere
    assert [data[s:e] for s, e in matcher.find_bytes(data)] == [b"A4042", b"A2X3Y4Z5QQ"]


def test_ids_with_punctuation_inside_in_text_and_pickles():
    matcher = RawIdMatcher([f"shopper-{u:05d}" for u in range(1000)])
    text = "shopper-000421 xshopper-00042 (shopper-00042) shopper-00999."
    assert [text[s:e] for s, e in matcher.find(text)] == ["shopper-00042", "shopper-00999"]
    data = pickle.dumps(
        {"users": ["shopper-00042"]}, protocol=2
    )  # the string is followed by an opcode letter
    assert [data[s:e] for s, e in matcher.find_bytes(data)] == [b"shopper-00042"]


def test_ids_that_are_catalog_words_are_not_searched():
    matcher = RawIdMatcher(["A312", "A4042"], public_texts=["Pipe meets ASTM A312 for quality"])
    assert matcher.ambiguous == 1
    assert matcher.find("ASTM A312 pipe bought by A4042") == [(25, 30)]


# ----------------------------------------------------------------------------------------------- scan_paths
def test_clean_corpus_has_no_finding(tmp_path, scrubber):
    write_clean_corpus(tmp_path)
    assert scan_paths([tmp_path], scrubber, RAW_IDS) == []


def test_planted_findings_with_their_locations(tmp_path, scrubber):
    write_clean_corpus(tmp_path)
    model = tmp_path / "model"
    users = model / "users.jsonl"
    users.write_text(users.read_text() + json.dumps({"note": f"mail {EMAIL_VALUE}"}) + "\n")  # line 3
    with (model / "items.csv").open("a") as fh:
        fh.write(f"i9,support line {PHONE_VALUE}\n")  # line 7: header + 5 rows
    card = tmp_path / "model_card.md"
    card.write_text(card.read_text() + f"paid with {CARD_VALUE}\n")  # line 9
    frame = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(8)], "user": ["u_x"] * 5 + ["AB12CD34EF", "u_y", "u_z"]}
    )
    frame.to_parquet(model / "events.parquet")
    blob = bytearray(np.random.default_rng(1).bytes(10_000))
    blob[5000:5012] = b"\x00A2X3Y4Z5QQ\x00"
    (model / "weights.bin").write_bytes(bytes(blob))
    np.save(model / "ids.npy", np.array(["u_a", "u_b", "u_c", "A2X3Y4Z5QQ"]))
    (tmp_path / "reports" / "leaky.html").write_text(
        evidently_like_html(["bolt", f"contact {EMAIL_VALUE} now"])
    )

    findings = scan_paths([tmp_path], scrubber, RAW_IDS)
    assert kinds_and_locations(findings) == sorted(
        [
            (f"{model / 'users.jsonl'}:3", EMAIL),
            (f"{model / 'items.csv'}:7", PHONE),
            (f"{card}:9", CARD),
            (f"{model / 'events.parquet'}:user[5]", RAW_ID),
            (f"{model / 'weights.bin'}@5001", RAW_ID),
            (f"{model / 'ids.npy'}[3]", RAW_ID),
            (f"{tmp_path / 'reports' / 'leaky.html'}:7", EMAIL),  # the payload's line
        ]
    )
    assert_redacted(findings, EMAIL_VALUE, PHONE_VALUE, CARD_VALUE, "A2X3Y4Z5QQ", "AB12CD34EF")
    csv_finding = next(f for f in findings if f.kind == PHONE)
    assert csv_finding.excerpt == "i9,support line <PHONE_NUMBER>"


def test_html_library_code_is_not_scanned_but_visible_text_is(tmp_path, scrubber):
    page = tmp_path / "r.html"
    page.write_text(
        evidently_like_html(["bolt"]).replace("<h1>Data drift</h1>", f"<h1>By {EMAIL_VALUE}</h1>")
    )
    findings = scan_paths([page], scrubber, RAW_IDS)
    assert [(f.location, f.kind) for f in findings] == [(f"{page}:4", EMAIL)]
    assert findings[0].excerpt.startswith(
        "By <EMAIL_ADDRESS> Drift share 0.25"
    )  # tags gone, entities decoded


def test_long_lines_and_small_windows_find_each_once(tmp_path, scrubber, monkeypatch):
    monkeypatch.setattr(scan, "WINDOW_CHARS", 256)
    monkeypatch.setattr(scan, "OVERLAP_CHARS", 64)
    monkeypatch.setattr(scan, "BATCH_CHARS", 300)
    filler = "bolts and nuts, "
    line = "".join(f"{filler * (i % 5)}mail person{i}@example.com then A2X3Y4Z5QQ; " for i in range(60))
    path = tmp_path / "one_line.json"
    path.write_text("first line\n" + line + "\nlast line 0.25\n")
    findings = scan_paths([path], scrubber, RAW_IDS)
    assert sum(f.kind == EMAIL for f in findings) == 60
    assert sum(f.kind == RAW_ID for f in findings) == 60
    assert {f.location for f in findings} == {f"{path}:2"}
    # the same with HTML: the splitter sees the page in small chunks too
    page = tmp_path / "page.html"
    page.write_text(evidently_like_html(["bolt", f"contact {EMAIL_VALUE} now"], library_repeats=50))
    assert [f.kind for f in scan_paths([page], scrubber, RAW_IDS)] == [EMAIL]


def test_binary_chunks_find_each_raw_id_once(tmp_path, scrubber, monkeypatch):
    monkeypatch.setattr(scan, "BINARY_CHUNK", 512)
    blob = bytearray(b"\x00" * 5000)
    offsets = list(range(3, 4980, 37))  # many of them straddle a chunk boundary
    for k in offsets:
        blob[k : k + 10] = b"A2X3Y4Z5QQ"
    path = tmp_path / "blob.pt"
    path.write_bytes(bytes(blob))
    findings = scan_paths([path], scrubber, RAW_IDS)
    assert [f.location for f in findings] == [f"{path}@{k}" for k in offsets]


def test_missing_path_is_an_error(tmp_path, scrubber):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_paths([tmp_path / "absent"], scrubber, RAW_IDS)


@pytest.mark.slow
def test_real_evidently_report(tmp_path, scrubber):
    pytest.importorskip("evidently")
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(0)

    def report(queries: list[str], path: Path) -> Path:
        ref = pd.DataFrame({"x": rng.normal(size=len(queries)), "query": queries})
        cur = ref.assign(x=ref["x"] + 0.3)
        snapshot = Report([DataDriftPreset()]).run(
            reference_data=Dataset.from_pandas(ref), current_data=Dataset.from_pandas(cur)
        )
        snapshot.save_html(str(path))
        return path

    clean = report(["bolt m8 pack"] * 50 + ["gloves size 9"] * 50, tmp_path / "clean.html")
    assert clean.stat().st_size > 1_000_000  # the JavaScript bundle is in the file
    assert scan_paths([clean], scrubber, RAW_IDS) == []
    leaky = report(
        ["bolt m8 pack"] * 50 + [f"contact {EMAIL_VALUE}"] + ["gloves"] * 49, tmp_path / "leaky.html"
    )
    findings = scan_paths([leaky], scrubber, RAW_IDS)
    assert findings and {f.kind for f in findings} == {EMAIL}
    assert_redacted(findings, EMAIL_VALUE)
