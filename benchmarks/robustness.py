"""Robustness: the running API fuzzed with a few thousand generated bad requests, and the ingestion half.

The API half builds a servable model without training (`benchmarks/serving_world.py`'s `build_world`: the frozen
pretrained MiniLM over a random catalogue, registered with its artifact digests and promoted, Feast filled),
starts `ml.serving.app.serve` (uvicorn, access log off, the library's INFO log on) in a subprocess on
127.0.0.1, and sends it requests from a SEEDED generator (no property-testing package): wrong types, NaN and
infinities, huge numbers, lone surrogates, nested arrays and objects, bodies that are arrays carrying a
`user_id`, unknown and made-up keys, bad JSON and bad UTF-8, wrong content types, bodies over the cap
(declared and chunked, up to 10 MB), bad recommendation paths and parameters, unknown routes and methods,
and missing, wrong or odd API keys; a tenth are valid requests, to show the service still answers. Every
request plants a fresh raw shopper id (`rawid-<9 digits>`) where an id could go: the path, the body's
`user_id`, keys, nested values. Counted: requests tried, status codes per kind, 5xx (must be 0), planted ids
found in the server's log (must be 0) and in the error answers (must be 0), the largest answer.

The ingestion half is `benchmarks/robustness_ingest.py` (`run(seed, n_rows)` and `markdown(result)`), run when
that module is importable; the report says so when it is not.

    .venv/bin/python benchmarks/robustness.py                  # 3000 requests, ~5 min on 2 cores
    .venv/bin/python benchmarks/robustness.py --requests 500

Writes benchmarks/results/robustness.json and robustness.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # the sibling scripts, as they import each other

import common  # noqa: E402
from serving_world import API_KEY, build_world, free_port, start_server, stop_server, wait_healthy  # noqa: E402

log = logging.getLogger("benchmarks.robustness")

RAW_ID = re.compile(r"rawid-[0-9]{9}")
MB = 1 << 20


@dataclass
class Probe:
    """One generated request."""

    kind: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: bool = False  # send the body chunked (no Content-Length)
    params: dict[str, str] | None = None
    valid: bool = False


# ------------------------------------------------------------------------------------------------ the generator
class Generator:
    """Seeded bad requests; each plants one fresh raw id (`self.planted` keeps them all)."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.planted: set[str] = set()

    def raw(self) -> str:
        value = f"rawid-{self.rnd.randrange(10**9):09d}"
        self.planted.add(value)
        return value

    def auth(self) -> dict[str, str]:
        return {"X-API-Key": API_KEY, "content-type": "application/json"}

    def junk_value(self, depth: int = 0) -> Any:
        """Any JSON-ish value, as text (so NaN, Infinity and lone surrogates can be written)."""
        r = self.rnd
        choices = [
            lambda: "NaN",
            lambda: "Infinity",
            lambda: "-Infinity",
            lambda: "1e400",
            lambda: "-1e400",
            lambda: str(r.choice([10**20, -(10**30), 2**63, -(2**64)])),
            lambda: "9" * r.randint(20, 4000),
            lambda: str(r.uniform(-1e6, 1e6)),
            lambda: r.choice(["true", "false", "null"]),
            lambda: json.dumps(self.raw()),
            lambda: '"\\ud800"',
            lambda: '"' + self.raw() + '\\udc00"',
            lambda: '"\\udfff\\ud800"',
            lambda: '""',
            lambda: json.dumps(" " * r.randint(1, 50)),
            lambda: json.dumps("x" * r.randint(513, 3000)),
        ]
        if depth < 3:
            choices += [
                lambda: "[" + ",".join(self.junk_value(depth + 1) for _ in range(r.randint(0, 3))) + "]",
                lambda: (
                    "{" + ",".join(f'"{self.raw()}":{self.junk_value(depth + 1)}' for _ in range(r.randint(0, 3))) + "}"
                ),
            ]
        return r.choice(choices)()

    def search_body(self) -> str:
        """A /search object with one or more fields wrong."""
        r = self.rnd
        fields = {
            "query": json.dumps(r.choice(["red shoe", "mug", "lamp"])),
            "k": str(r.randint(1, 100)),
            "user_id": json.dumps(self.raw()),
        }
        for name in r.sample(list(fields), r.randint(1, 3)):
            fields[name] = self.junk_value()
        if r.random() < 0.3:
            fields[self.raw()] = self.junk_value()  # a made-up key
        if r.random() < 0.2:
            fields.pop(r.choice(list(fields)))
        return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"

    def probe(self) -> Probe:
        r = self.rnd
        kind = r.choices(
            [
                "valid",
                "search_fields",
                "search_body_shape",
                "bad_json",
                "content_type",
                "huge_body",
                "recommendations_params",
                "recommendations_path",
                "routes_methods",
                "api_key",
            ],
            weights=[10, 25, 10, 10, 6, 3, 12, 8, 8, 8],
        )[0]
        return getattr(self, f"_{kind}")()

    def _valid(self) -> Probe:
        if self.rnd.random() < 0.5:
            return Probe(
                "valid",
                "GET",
                f"/recommendations/{self.raw()}",
                self.auth(),
                params={"k": str(self.rnd.randint(1, 100))},
                valid=True,
            )
        body = json.dumps(
            {"query": self.rnd.choice(["red shoe", "blue mug", "wool jacket"]), "k": 5, "user_id": self.raw()}
        )
        return Probe("valid", "POST", "/search", self.auth(), body.encode(), valid=True)

    def _search_fields(self) -> Probe:
        return Probe(
            "search_fields", "POST", "/search", self.auth(), self.search_body().encode("utf-8", "surrogatepass")
        )

    def _search_body_shape(self) -> Probe:
        r = self.rnd
        raw = json.dumps(self.raw())
        body = r.choice(
            [
                f'[{{"user_id":{raw},"query":"shoe"}}]',
                f"[{raw}]",
                f'[[{{"user_id":{raw}}}]]',
                "[" * 3000 + "]" * 3000,
                '{"a":' * 2000 + "1" + "}" * 2000,
                f'{{"query":{{"user_id":{raw}}}}}',
                raw,
                "null",
                "0",
                "NaN",
                '"\\ud800"',
                f'{{"user_id":{raw},"user_id":{raw}}}',
            ]
        )
        return Probe("search_body_shape", "POST", "/search", self.auth(), body.encode())

    def _bad_json(self) -> Probe:
        r = self.rnd
        raw = self.raw()
        body = r.choice(
            [
                f'{{"query": "shoe", "user_id": "{raw}"',
                f"{{'query': 'shoe', 'user_id': '{raw}'}}",
                f'{{"query": "shoe", "user_id": "{raw}",}}',
                "",
                "{",
                "}",
                f'{{"user_id": "{raw}" "k": 1}}',
            ]
        ).encode()
        if r.random() < 0.3:
            body = bytes(r.randrange(256) for _ in range(r.randint(1, 200))) + raw.encode()  # not UTF-8
        return Probe("bad_json", "POST", "/search", self.auth(), body)

    def _content_type(self) -> Probe:
        r = self.rnd
        raw = self.raw()
        ctype, body = r.choice(
            [
                ("text/plain", f'{{"query": "shoe", "user_id": "{raw}"}}'),
                ("application/x-www-form-urlencoded", f"query=shoe&user_id={raw}"),
                (
                    "multipart/form-data; boundary=xx",
                    f'--xx\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n{raw}\r\n--xx--',
                ),
                ("application/xml", f"<user_id>{raw}</user_id>"),
                ("", f'{{"query": "shoe", "user_id": "{raw}"}}'),
                ("application/json; charset=latin-1", f'{{"query": "shoe", "user_id": "{raw}"}}'),
            ]
        )
        headers = {"X-API-Key": API_KEY, "content-type": ctype}
        return Probe("content_type", "POST", "/search", headers, body.encode())

    def _huge_body(self) -> Probe:
        r = self.rnd
        size = r.choice([20_000, 100_000, MB, 10 * MB])
        raw = self.raw()
        body = ('{"query": "' + "x" * size + f'", "user_id": "{raw}"}}').encode()
        return Probe(
            "huge_body",
            "POST",
            r.choice(["/search", f"/recommendations/{raw}"]),
            self.auth(),
            body,
            stream=r.random() < 0.5,
        )

    def _recommendations_params(self) -> Probe:
        r = self.rnd
        k = r.choice(
            [
                "NaN",
                "Infinity",
                "-Infinity",
                "1e400",
                "0",
                "-1",
                "101",
                "9" * 50,
                "ten",
                "",
                "1.5",
                "%00",
                "\u00e9",
                "[1]",
            ]
        )
        params = {"k": k}
        if r.random() < 0.3:
            params[self.raw()] = self.raw()
        return Probe("recommendations_params", "GET", f"/recommendations/{self.raw()}", self.auth(), params=params)

    def _recommendations_path(self) -> Probe:
        r = self.rnd
        raw = self.raw()
        tail = r.choice(
            [
                f"{raw}%ED%A0%80",
                f"{raw}%00",
                "%20%20",
                raw + "x" * 300,
                f"{raw}/extra",
                f"{raw}%2F..%2F",
                f"{raw}%FF%FE",
                f"{raw}?k=5&k=6",
                f"..%2F{raw}",
            ]
        )
        return Probe("recommendations_path", "GET", f"/recommendations/{tail}", self.auth())

    def _routes_methods(self) -> Probe:
        r = self.rnd
        raw = self.raw()
        method, path = r.choice(
            [
                ("GET", f"/users/{raw}"),
                ("POST", f"/recommendations/{raw}"),
                ("DELETE", f"/recommendations/{raw}"),
                ("PUT", "/search"),
                ("GET", "/search"),
                ("PATCH", "/version"),
                ("POST", "/healthz"),
                ("OPTIONS", "/search"),
                ("HEAD", f"/recommendations/{raw}"),
                ("GET", f"/{raw}"),
                ("GET", f"/recommendations/{raw}/../../version"),
                ("TRACE", "/healthz"),
            ]
        )
        body = json.dumps({"user_id": raw}).encode() if method in ("POST", "PUT", "PATCH", "DELETE") else None
        return Probe("routes_methods", method, path, self.auth(), body)

    def _api_key(self) -> Probe:
        r = self.rnd
        raw = self.raw()
        key = r.choice(
            [None, "", "wrong-key-0123456789", API_KEY + "x", API_KEY[:-1], "k" * 10_000, raw, "\u00e9" * 20]
        )
        headers = {"content-type": "application/json"}
        if key is not None:
            headers["X-API-Key"] = key
        if r.random() < 0.5:
            return Probe("api_key", "POST", "/search", headers, json.dumps({"query": "shoe", "user_id": raw}).encode())
        return Probe("api_key", "GET", r.choice([f"/recommendations/{raw}", "/version"]), headers)


# ------------------------------------------------------------------------------------------------ sending
def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def send(client: Any, probe: Probe) -> tuple[int | None, bytes, str | None]:
    """(status, answer body, transport error) of one probe."""
    import httpx

    headers = {k: v.encode("utf-8") for k, v in probe.headers.items()}  # bytes: sent as they are
    content: Any = probe.body
    if probe.body is not None and probe.stream:
        content = _chunks(probe.body)
    try:
        got = client.request(probe.method, probe.path, headers=headers, content=content, params=probe.params)
        return got.status_code, got.content, None
    except httpx.HTTPError as err:
        return None, b"", type(err).__name__


def fuzz(port: int, n_requests: int, seed: int, threads: int, max_seconds: float) -> dict[str, Any]:
    import httpx

    gen = Generator(seed)
    probes = [gen.probe() for _ in range(n_requests)]
    by_kind: dict[str, Counter] = defaultdict(Counter)
    echoed: list[str] = []
    echoed_ok: list[str] = []
    transport_errors: Counter = Counter()
    largest = {"bytes": 0, "kind": None, "status": None}
    fivexx: list[dict[str, Any]] = []
    deadline = time.monotonic() + max_seconds

    def run(share: list[Probe]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for probe in share:
                if time.monotonic() > deadline:
                    return
                status, body, error = send(client, probe)
                key = str(status) if status is not None else f"no answer ({error})"
                by_kind[probe.kind][key] += 1
                if error is not None:
                    transport_errors[f"{probe.kind}: {error}"] += 1
                if status is not None and status >= 500:
                    fivexx.append({"kind": probe.kind, "method": probe.method, "status": status})
                if RAW_ID.search(body.decode("utf-8", "replace")):
                    # a 2xx /search answer repeats its query by contract (a planted id sent as the query)
                    (echoed if status is None or status >= 300 else echoed_ok).append(probe.kind)
                if len(body) > largest["bytes"]:
                    largest.update(bytes=len(body), kind=probe.kind, status=status)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, [probes[t::threads] for t in range(threads)]))
    tried = sum(sum(c.values()) for c in by_kind.values())
    statuses: Counter = Counter()
    for counts in by_kind.values():
        statuses.update(counts)
    return {
        "requests_generated": n_requests,
        "requests_tried": tried,
        "seconds": round(time.monotonic() - started, 1),
        "threads": threads,
        "status_codes": dict(sorted(statuses.items())),
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
        "responses_5xx": len(fivexx),
        "examples_5xx": fivexx[:10],
        "transport_errors": dict(transport_errors),
        "raw_ids_planted": len(gen.planted),
        "raw_ids_echoed_in_error_answers": len(echoed),
        "raw_ids_in_2xx_answers": dict(Counter(echoed_ok)),
        "largest_answer": largest,
        "valid_answered_2xx": sum(n for s, n in by_kind["valid"].items() if s.startswith("2")),
        "valid_tried": sum(by_kind["valid"].values()),
        "_planted": gen.planted,
    }


def raw_ids_in_log(log_text: str, planted: set[str]) -> list[str]:
    return sorted({m for m in RAW_ID.findall(log_text) if m in planted})


# ------------------------------------------------------------------------------------------------ ingestion half
def ingestion_half(seed: int, n_rows: int) -> tuple[dict[str, Any] | None, str]:
    """The ingestion benchmark's result and markdown, or (None, why it was not run)."""
    try:
        import robustness_ingest  # benchmarks/robustness_ingest.py
    except ImportError as err:
        return None, f"## Ingestion\n\nNot run: `benchmarks/robustness_ingest.py` is not importable here ({err}).\n"
    result = robustness_ingest.run(seed=seed, n_rows=n_rows)
    return result, robustness_ingest.markdown(result)


# ------------------------------------------------------------------------------------------------ report
def markdown(report: dict[str, Any], ingestion_md: str) -> str:
    api = report["api"]
    lines = [
        "# Robustness",
        "",
        f"Machine: {report['machine']['cores']} cores, {report['machine']['cpu']}, Python {report['machine']['python']}; "
        f"{report['machine']['date']}. Seed {report['seed']}.",
        "",
        "## API (`benchmarks/robustness.py`)",
        "",
        f"A real `ml.serving.app.serve` (uvicorn, one worker) over a {report['n_items']}-item model, fuzzed by "
        f"{api['threads']} threads with {api['requests_tried']} generated requests "
        f"({api['requests_generated']} generated) in {api['seconds']} s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests tried | {api['requests_tried']} |",
        f"| 5xx answers | **{api['responses_5xx']}** |",
        f"| raw ids planted | {api['raw_ids_planted']} |",
        f"| raw ids found in the server log | **{report['raw_ids_in_server_log']}** |",
        f"| raw ids echoed in error answers (4xx) | **{api['raw_ids_echoed_in_error_answers']}** |",
        f"| 2xx answers holding a planted id | {sum(api['raw_ids_in_2xx_answers'].values())} "
        "(a /search answer repeats its query by contract; the generator sent ids as queries) |",
        f"| valid requests answered 2xx | {api['valid_answered_2xx']} of {api['valid_tried']} |",
        f"| largest answer | {api['largest_answer']['bytes']} bytes ({api['largest_answer']['kind']}) |",
        f"| server log lines | {report['server_log_lines']} |",
        "",
        "Status codes: " + ", ".join(f"{k}: {v}" for k, v in api["status_codes"].items()),
        "",
        "| kind | status codes |",
        "|---|---|",
    ]
    for kind, counts in api["by_kind"].items():
        lines.append(f"| {kind} | " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " |")
    if api["transport_errors"]:
        lines += [
            "",
            "Requests with no answer (the client's error): "
            + ", ".join(f"{k}: {v}" for k, v in api["transport_errors"].items()),
        ]
    lines += ["", ingestion_md.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="time bound of the fuzzing")
    parser.add_argument("--ingest-rows", type=int, default=2000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from ml.training.encoder import load_encoder

    with tempfile.TemporaryDirectory(prefix="vetted-robustness-") as tmp:
        home = Path(tmp)
        build_world(home, args.items, args.seed, load_encoder())
        port, log_path = free_port(), home / "server.log"
        proc = start_server(home, port, log_path)
        try:
            wait_healthy(port, proc, timeout=600, log_path=log_path)
            api = fuzz(port, args.requests, args.seed, args.threads, args.max_seconds)
        finally:
            stop_server(proc)
        server_log = log_path.read_text(errors="replace")
    planted = api.pop("_planted")
    leaked = raw_ids_in_log(server_log, planted)
    ingestion, ingestion_md = ingestion_half(args.seed, args.ingest_rows)
    report = {
        "machine": common.machine(),
        "seed": args.seed,
        "n_items": args.items,
        "api": api,
        "raw_ids_in_server_log": len(leaked),
        "raw_id_examples_in_server_log": leaked[:5],
        "server_log_lines": len(server_log.splitlines()),
        "ingestion": ingestion,
        "ingestion_run": ingestion is not None,
    }
    common.write("robustness", report, markdown(report, ingestion_md))
    log.info(
        "API: %d requests, %d 5xx, %d raw ids in the log, %d echoed",
        api["requests_tried"],
        api["responses_5xx"],
        len(leaked),
        api["raw_ids_echoed_in_error_answers"],
    )
    return 0 if api["responses_5xx"] == 0 and not leaked and not api["raw_ids_echoed_in_error_answers"] else 1


if __name__ == "__main__":
    sys.exit(main())
