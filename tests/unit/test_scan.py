from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.privacy import scan_files, text_scan
from ml.privacy.pii import CARD, EMAIL, PHONE, PIIScrubber
from ml.privacy.raw_ids import RawIdMatcher, catalogue_texts, is_shopper_field
from ml.privacy.scan import scan_paths, scan_texts
from ml.privacy.text_scan import RAW_ID, PIIFinding

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
    (model / "requirements.txt").write_text("mlflow==3.17.2\ntorch==2.13.0\nfaiss-cpu==1.12.0\nnumpy==2.4.6\n")
    (model / "conda.yaml").write_text("channels: [conda-forge]\ndependencies:\n- python=3.11.9\n- pip<=25.1\n")
    (model / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", *map(str, range(3000)), "##5", "call"]))
    (model / "config.json").write_text(json.dumps({"hidden_size": 384, "layer_norm_eps": 1e-12, "vocab": 30522}))
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
    pd.DataFrame({"item_id": [f"i{i}" for i in range(5)], "title": titles}).to_csv(model / "items.csv", index=False)
    pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(5)], "title": titles, "price": [1.5, 2.0, 3.25, 4.0, 5.0]}
    ).to_parquet(model / "items.parquet")
    (model / "code.py").write_text("def top(x):\n    return x[::2]  # ndcg 0.0881234567\n")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"encoder.layer.0.weight": rng.normal(size=(64, 64)).astype(np.float32)}, model / "model.safetensors")
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
    data = noise + b'{"user": "A4042"}' + noise + b"\x00A2X3Y4Z5QQ\x00"  # quoted; long enough to count anywhere
    assert [data[s:e] for s, e in matcher.find_bytes(data)] == [b"A4042", b"A2X3Y4Z5QQ"]


def test_ids_with_punctuation_inside_in_text_and_pickles():
    matcher = RawIdMatcher([f"shopper-{u:05d}" for u in range(1000)])
    text = "shopper-000421 xshopper-00042 (shopper-00042) shopper-00999."
    assert [text[s:e] for s, e in matcher.find(text)] == ["shopper-00042", "shopper-00999"]
    data = pickle.dumps({"users": ["shopper-00042"]}, protocol=2)  # the string is followed by an opcode letter
    assert [data[s:e] for s, e in matcher.find_bytes(data)] == [b"shopper-00042"]


def test_ids_that_are_catalog_words_are_checked_only_where_shoppers_are_named():
    matcher = RawIdMatcher(["A312", "A4042"], public_texts=["Pipe meets ASTM A312 for quality"])
    assert matcher.report()["why_shopper_fields_only"]["words_of_the_catalogue_text"] == 1
    assert matcher.find("ASTM A312 pipe bought by A4042") == [(25, 30)]
    assert matcher.find_mentions("ASTM A312 pipe bought by A4042") == []
    text = "ASTM A312 pipe bought by user A312."
    assert [text[s:e] for s, e in matcher.find_mentions(text)] == ["A312"]


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
    frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(8)], "user": ["u_x"] * 5 + ["AB12CD34EF", "u_y", "u_z"]})
    frame.to_parquet(model / "events.parquet")
    blob = bytearray(np.random.default_rng(1).bytes(10_000))
    blob[5000:5012] = b"\x00A2X3Y4Z5QQ\x00"
    (model / "weights.bin").write_bytes(bytes(blob))
    np.save(model / "ids.npy", np.array(["u_a", "u_b", "u_c", "A2X3Y4Z5QQ"]))
    (tmp_path / "reports" / "leaky.html").write_text(evidently_like_html(["bolt", f"contact {EMAIL_VALUE} now"]))

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
    page.write_text(evidently_like_html(["bolt"]).replace("<h1>Data drift</h1>", f"<h1>By {EMAIL_VALUE}</h1>"))
    findings = scan_paths([page], scrubber, RAW_IDS)
    assert [(f.location, f.kind) for f in findings] == [(f"{page}:4", EMAIL)]
    assert findings[0].excerpt.startswith("By <EMAIL_ADDRESS> Drift share 0.25")  # tags gone, entities decoded


def test_long_lines_and_small_windows_find_each_once(tmp_path, scrubber, monkeypatch):
    monkeypatch.setattr(text_scan, "WINDOW_CHARS", 256)
    monkeypatch.setattr(text_scan, "OVERLAP_CHARS", 64)
    monkeypatch.setattr(text_scan, "BATCH_CHARS", 300)
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
    monkeypatch.setattr(scan_files, "BINARY_CHUNK", 512)
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
    leaky = report(["bolt m8 pack"] * 50 + [f"contact {EMAIL_VALUE}"] + ["gloves"] * 49, tmp_path / "leaky.html")
    findings = scan_paths([leaky], scrubber, RAW_IDS)
    assert findings and {f.kind for f in findings} == {EMAIL}
    assert_redacted(findings, EMAIL_VALUE)


# ----------------------------------------------------------------------------------------------- shopper fields
MODEL_NUMBER_IDS = ["A276", "A3144", "A7", "A4042", "42", "4521", "0", "A2X3Y4Z5QQ"]
MODEL_NUMBER_TITLES = [
    "Stainless Steel Round Bar, ASTM A276, 0.625 in Diameter",
    "CTA Tools A3144 25-Blade Feeler Gauge",
    "Hall Effect Sensor A3144 10 pcs, 42 mm",
    "Model 4521 Torque Wrench, 0 to 150 ft-lb",
    "Dremel A7 Cutting Wheel, pack of 42",
]


def write_model_number_corpus(root: Path) -> None:
    """A run's artifacts over a catalogue whose model numbers and numbers equal short raw ids: no leak in it."""
    root.mkdir(parents=True)
    items = pd.DataFrame({"item_id": [str(i) for i in range(len(MODEL_NUMBER_TITLES))], "title": MODEL_NUMBER_TITLES})
    items.to_parquet(root / "items.parquet", index=False)
    items.to_csv(root / "items.csv", index=False)
    (root / "item_index.json").write_text(json.dumps({str(i): i for i in range(5000)}))
    (root / "metrics.json").write_text(json.dumps({"n_users": 4521, "k": 42, "user_ndcg_ratio": 0.93, "steps": 0}))
    (root / "card.md").write_text("Trained on 4521 shoppers, 42 steps.\n- users: pseudonymized\n")
    pd.DataFrame({"user_id": [PSEUDONYM] * 3, "item_id": [0, 42, 4521], "n": [4521, 42, 7]}).to_parquet(
        root / "events.parquet", index=False
    )


def test_a_catalogue_of_model_numbers_gives_no_finding_and_says_how_ids_were_checked(tmp_path, scrubber):
    matcher = RawIdMatcher(MODEL_NUMBER_IDS, public_texts=MODEL_NUMBER_TITLES)
    write_model_number_corpus(tmp_path / "run")
    texts = {"param:n_users": "4521", "param:k": "42", "tag:data.source": "ASTM A276 bars"}
    assert scan_texts(texts, scrubber, matcher) + scan_paths([tmp_path / "run"], scrubber, matcher) == []
    report = matcher.report()
    assert report["raw_ids"] == 8 and report["searched_as_tokens"] == 2  # A4042, A2X3Y4Z5QQ
    assert report["why_shopper_fields_only"] == {
        "shorter_than_4_chars": 1,
        "digits_only_under_12": 3,
        "words_of_the_catalogue_text": 2,
    }
    assert report["shopper_values_compared"] >= 3  # events.parquet's user_id cells
    assert report["catalogue_texts_read"] == len(MODEL_NUMBER_TITLES)


def test_short_numeric_and_catalogue_ids_are_caught_as_shopper_values_and_mentions(tmp_path, scrubber):
    matcher = RawIdMatcher(MODEL_NUMBER_IDS, public_texts=MODEL_NUMBER_TITLES)
    run = tmp_path / "run"
    write_model_number_corpus(run)
    pd.DataFrame({"user_id": ["A276", PSEUDONYM], "title": ["x", "y"]}).to_parquet(run / "leak1.parquet")
    pd.DataFrame({"userId": [42, 7]}).to_parquet(run / "leak2.parquet")
    pd.DataFrame({"shopper": ["u_1", "A7"], "title": MODEL_NUMBER_TITLES[:2]}).to_csv(run / "leak3.csv", index=False)
    (run / "train.log").write_text("step 3 loss 0.5\nslow batch for user A3144 (12 ms)\n")
    (run / "cases.jsonl").write_text(json.dumps({"user_id": "0", "item_id": "42"}) + "\n")
    findings = scan_paths([run], scrubber, matcher)
    findings += scan_texts({"tag:customer_id": "4521", "param:note": "rerun for user_id=A276"}, scrubber, matcher)
    assert kinds_and_locations(findings) == sorted(
        [
            (f"{run}/leak1.parquet:user_id[0]", RAW_ID),
            (f"{run}/leak2.parquet:userId[0]", RAW_ID),
            (f"{run}/leak3.csv:shopper[1]", RAW_ID),
            (f"{run}/train.log:2", RAW_ID),
            (f"{run}/cases.jsonl:1", RAW_ID),
            ("tag:customer_id", RAW_ID),
            ("param:note", RAW_ID),
        ]
    )
    assert_redacted([f for f in findings if "log" in f.location], "A3144")


def test_token_ids_are_still_found_anywhere_and_pii_in_any_field(tmp_path, scrubber):
    matcher = RawIdMatcher(MODEL_NUMBER_IDS, public_texts=MODEL_NUMBER_TITLES)
    run = tmp_path / "run"
    write_model_number_corpus(run)
    (run / "notes.txt").write_text(f"A4042 wrote {EMAIL_VALUE}, {PHONE_VALUE}\n")
    kinds = {f.kind for f in scan_paths([run], scrubber, matcher)}
    assert kinds == {RAW_ID, EMAIL, PHONE}


@pytest.mark.parametrize(
    ("name", "shopper"),
    [
        ("user_id", True),
        ("userId", True),
        ("tag:data.shopper", True),
        ("raw_customer_ids", True),
        ("users", True),
        ("n_users", False),
        ("data.n_train_users", False),
        ("user_ndcg_ratio", False),
        ("item_id", False),
        ("username_hint", False),
    ],
)
def test_shopper_field_names(name, shopper):
    assert is_shopper_field(name) is shopper


def shopper_mention_cases() -> list[tuple[str, list[str]]]:
    return [
        ("user 42 bought", ["42"]),
        ('{"user_id": 42}', ["42"]),
        ("user_id='A7'", ["A7"]),
        ("n_users: 42", []),
        ("42 users", []),
        ("users are 42", []),
        ("user_group 42", []),
    ]


@pytest.mark.parametrize(("text", "want"), shopper_mention_cases())
def test_shopper_mentions(text, want):
    matcher = RawIdMatcher(["42", "A7"])
    assert [text[s:e] for s, e in matcher.find_mentions(text)] == want


# ----------------------------------------------------------------------------------------------- real corpora
def _corpus_run(root: Path, items: pd.DataFrame) -> Path:
    """What a run publishes about a real catalogue: its items (as the saved model holds them), an item index,
    metrics, and a feature table keyed by pseudonyms."""
    run = root / "run"
    run.mkdir()
    items.to_parquet(run / "items.parquet", index=False)
    items.head(2000).to_csv(run / "items.csv", index=False)
    (run / "item_index.json").write_text(json.dumps({str(i): k for k, i in enumerate(items["item_id"])}))
    (run / "metrics.json").write_text(json.dumps({"n_users": 2000, "n_items": len(items), "k": 10}))
    pd.DataFrame({"user_id": [PSEUDONYM] * 50, "item_id": items["item_id"].head(50)}).to_parquet(
        run / "features.parquet", index=False
    )
    return run


def _zero_then_planted(tmp_path: Path, scrubber, ids: set[str], items: pd.DataFrame, planted: str) -> None:
    matcher = RawIdMatcher(ids, public_texts=catalogue_texts(items))
    run = _corpus_run(tmp_path, items)
    assert scan_paths([run], scrubber, matcher) == []
    pd.DataFrame({"user_id": [PSEUDONYM, planted]}).to_parquet(run / "leak.parquet", index=False)
    (run / "serve.log").write_text(f"GET /recommend 200\nno history for user {planted}\n")
    found = kinds_and_locations(scan_paths([run], scrubber, matcher))
    assert found == [(f"{run}/leak.parquet:user_id[1]", RAW_ID), (f"{run}/serve.log:2", RAW_ID)]


@pytest.mark.data
def test_amazon2018_industrial_catalogue_gives_no_finding_and_a_planted_id_is_caught(tmp_path, scrubber):
    from ml.data import amazon2018
    from tests.conftest import shared_data

    raw = amazon2018.load(shared_data("amazon2018-industrial"))
    ids = set(raw.events["user_id"].dropna().astype(str)) | set(raw.users["user_id"].astype(str))
    items = raw.items[["item_id", "title", "brand", "category"]]
    matcher = RawIdMatcher(ids, public_texts=catalogue_texts(raw.items))
    public = matcher.report()["why_shopper_fields_only"]["words_of_the_catalogue_text"]
    assert public > 0  # model numbers such as "ASTM A276" equal raw ids here
    planted = next(i for i in sorted(ids) if i not in matcher and len(i) >= 4)  # a model number too, then a token id
    _zero_then_planted(tmp_path, scrubber, ids, items, "A276" if "A276" in ids else planted)


@pytest.mark.data
def test_amazon2018_games_numeric_ids_give_no_finding_and_a_planted_id_is_caught(tmp_path, scrubber):
    from tests.conftest import shared_data

    folder = shared_data("amazon2018-games")
    users = pd.read_csv(folder / "Games-6k.test.inter", sep="\t", usecols=[0], dtype=str).iloc[:, 0]
    titles = pd.read_csv(folder / "Games-6k.item", sep="\t", dtype=str, quoting=3)
    items = pd.DataFrame({"item_id": titles.iloc[:, 0], "title": titles.iloc[:, 1].fillna("")})
    ids = set(users)
    assert len(ids) > 50_000 and all(i.isdigit() for i in ids)  # 0, 1, ...: the same numbers as item ids
    _zero_then_planted(tmp_path, scrubber, ids, items, "4521")


def test_a_tokenizer_vocabulary_index_after_user_is_no_shopper_but_the_same_line_elsewhere_is(tmp_path, scrubber):
    """Numeric shopper ids (amazon2018-games): a saved tokenizer's `"user": 2034` is the word's index."""
    matcher = RawIdMatcher(["2034", "51007"])
    encoder = tmp_path / "model" / "encoder"
    encoder.mkdir(parents=True)
    (encoder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"user": 2034, "users": 51007}}}))
    (encoder / "vocab.txt").write_text("[PAD]\nuser 2034\n")
    assert scan_paths([tmp_path / "model"], scrubber, matcher) == []
    (tmp_path / "model" / "params.json").write_text(json.dumps({"user": 2034}))
    assert kinds_and_locations(scan_paths([tmp_path / "model"], scrubber, matcher)) == [
        (f"{tmp_path}/model/params.json:1", RAW_ID)
    ]
