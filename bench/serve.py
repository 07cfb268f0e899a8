"""`translate serve` under load, on loopback: throughput and latency by concurrent clients,
batched against unbatched, served translations against `translate translate`, memory over
10,000 requests, and a soak of bad input interleaved with good requests.

Each client sends one Multi30k test sentence per request and waits for the answer before
sending the next. "Unbatched" is the same load on a server started with
`--max-batch-sentences 1 --batch-wait-ms 0`: one sentence per decode, requests queue in
arrival order (with 1 client: the sentences sent one request at a time). Every phase starts
its own server in a subprocess on a free loopback port, stops after --requests requests or
--seconds seconds (whichever comes first), and ends it with SIGTERM (it must exit 0).
Clients and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from . import ROOT

TEST_SET = ROOT.parent / "shared/data/multi30k/test_2016_flickr.de.gz"
UNBATCHED = ["--max-batch-sentences", "1", "--batch-wait-ms", "0"]


@dataclass
class Level:
    """What one load level measured."""

    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    served: dict[int, set[str]] = field(default_factory=dict)  # sentence index -> texts seen

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def row(self, mode: str) -> str:
        cuts = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [0] * 99
        p50, p95, p99 = (1000 * cuts[i] for i in (49, 94, 98))
        return (
            f"{mode:<10} {self.clients:>7} {len(self.latencies):>8} {self.rate:>11.1f} "
            f"{p50:>7.0f} {p95:>7.0f} {p99:>7.0f}"
        )


@contextmanager
def server(args: argparse.Namespace, extra: list[str] = ()):
    """`translate serve` in a subprocess on a free loopback port; yields (url, process)."""
    command = [sys.executable, "-m", "translate", "serve", "-m", args.model, "--port", "0"]
    command += ["--beam", str(args.beam), "--dtype", args.dtype, "--threads", str(args.threads)]
    command += ["--quantize", args.quantize] if args.quantize else []
    process = subprocess.Popen([*command, *extra], stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    if "serving on" not in line:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    url = line.split("serving on ")[1].split()[0]
    threading.Thread(target=process.stderr.read, daemon=True).start()  # never block its writes
    try:
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        if code != 0:
            print(f"warning: the server exited with {code} after SIGTERM", file=sys.stderr)


async def load(
    url: str, sentences: list[str], clients: int, requests: int, seconds: float
) -> Level:
    """``clients`` concurrent clients, one sentence per request, until ``requests`` requests
    were sent or ``seconds`` passed."""
    counter, deadline = itertools.count(), time.perf_counter() + seconds
    level = Level(clients, 0.0)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while time.perf_counter() < deadline and (n := next(counter)) < requests:
                index = n % len(sentences)
                start = time.perf_counter()
                async with session.post(f"{url}/translate", json={"text": [sentences[index]]}) as r:
                    answer = await r.json()
                    if r.status != 200:
                        raise SystemExit(f"{r.status} for {sentences[index]!r}: {answer}")
                level.latencies.append(time.perf_counter() - start)
                level.served.setdefault(index, set()).add(answer["translations"][0]["text"])

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        level.seconds = time.perf_counter() - start
    return level


def reference_translations(args: argparse.Namespace, sentences: list[str]) -> list[str]:
    """`translate translate` on the same lines, with the same model settings."""
    with tempfile.TemporaryDirectory() as work:
        source, out = Path(work) / "in.de", Path(work) / "out.en"
        source.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        command = [sys.executable, "-m", "translate", "translate", "-m", args.model]
        command += ["-i", str(source), "-o", str(out), "--beam", str(args.beam)]
        command += ["--dtype", args.dtype, "--threads", str(args.threads)]
        command += ["--quantize", args.quantize] if args.quantize else []
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        return out.read_text(encoding="utf-8").split("\n")[:-1]


def compare(levels: list[Level], reference: list[str]) -> tuple[int, list[str]]:
    """How many sentences were checked, and a line for each that was served differently."""
    served: dict[int, set[str]] = {}
    for level in levels:
        for index, texts in level.served.items():
            served.setdefault(index, set()).update(texts)
    differ = [
        f"  line {index + 1}: cli {reference[index]!r}, served {sorted(texts)!r}"
        for index, texts in sorted(served.items())
        if texts != {reference[index]}
    ]
    return len(served), differ


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


def bad_requests(limits: dict) -> list[tuple[str, str, str, bytes | None, int]]:
    """(name, method, path, body, expected status) of each kind of bad input."""
    too_many = json.dumps({"text": ["Ein Hund."] * (limits["max_sentences"] + 1)})
    too_big = json.dumps({"text": ["Ein Hund rennt. " * (limits["max_bytes"] // 16 + 1)]})
    post = [
        ("malformed JSON", b'{"text": ["Ein Hund."', 400),
        ("not an object", b'["Ein Hund."]', 400),
        ("text not a list", b'{"text": "Ein Hund."}', 400),
        ("not a string", b'{"text": ["Ein Hund.", 3]}', 400),
        ("empty list", b'{"text": []}', 400),
        ("invalid UTF-8", b'{"text": ["Ein Hund \xff\xfe."]}', 400),
        ("lone surrogate", b'{"text": ["\\ud800"]}', 400),
        ("unknown field", b'{"text": ["Ein Hund."], "colour": "red"}', 400),
        ("bad beam", b'{"text": ["Ein Hund."], "beam": -1}', 400),
        ("n_best > beam", b'{"text": ["Ein Hund."], "beam": 2, "n_best": 3}', 400),
        ("NaN option", b'{"text": ["Ein Hund."], "length_penalty": NaN}', 400),
        ("nested deep", b"[" * 100_000, 400),
        ("too many sentences", too_many.encode(), 413),
        ("too many bytes", too_big.encode(), 413),
    ]
    return [(name, "POST", "/translate", body, status) for name, body, status in post] + [
        ("unknown route", "GET", "/translate/v2", None, 404),
        ("wrong method", "GET", "/translate", None, 405),
    ]


async def soak(url: str, sentences: list[str], reference: list[str], rounds: int, clients: int):
    """Each client sends every bad request, each followed by a good one, ``rounds`` times;
    good ones carry blank and over-long sentences at times (answered, not refused)."""
    counts = dict.fromkeys(["2xx", "4xx", "5xx", "connection errors"], 0)
    counts |= {"good right": 0, "good wrong": 0, "bad as expected": 0, "bad otherwise": 0}
    good = itertools.count()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/model") as r:
            cases = bad_requests((await r.json())["limits"])

        async def send(method: str, path: str, body) -> tuple[int, dict | None]:
            try:
                async with session.request(method, f"{url}{path}", data=body) as r:
                    answer = await r.json(content_type=None)
                    counts[f"{r.status // 100}xx"] += 1
                    return r.status, answer
            except aiohttp.ClientError:
                counts["connection errors"] += 1
                return 0, None

        async def good_request() -> None:
            i = next(good) % len(sentences)
            text, want = [sentences[i]], [reference[i]]
            if i % 7 == 0:  # blank lines are answered with blank lines
                text, want = ["", "  ", *text], ["", "", *want]
            if i % 11 == 0:  # a sentence over the length limit is cut, with a warning
                text.append("Ein Hund " * 300)
            status, answer = await send("POST", "/translate", json.dumps({"text": text}))
            lines = answer["translations"] if status == 200 else []
            right = len(lines) == len(text) and [a["text"] for a in lines[: len(want)]] == want
            right &= i % 11 != 0 or "warning" in lines[-1]
            counts["good right" if right else "good wrong"] += 1

        async def client() -> None:
            for _ in range(rounds):
                for _, method, path, body, status in cases:
                    got, answer = await send(method, path, body)
                    named = isinstance(answer, dict) and bool(answer.get("error"))
                    counts["bad as expected" if got == status and named else "bad otherwise"] += 1
                    await good_request()

        await asyncio.gather(*(client() for _ in range(clients)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--model", required=True, help="model directory")
    parser.add_argument("--test-set", default=str(TEST_SET), help="German sentences, .gz or not")
    parser.add_argument("--sentences", type=int, default=1000, help="the first N of the test set")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--quantize", choices=["int8"])
    parser.add_argument("--threads", type=int, default=0, help="server threads (0: all cores)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--requests", type=int, default=2000, help="per load level, at most")
    parser.add_argument("--seconds", type=float, default=60, help="per load level, at most")
    parser.add_argument("--memory-requests", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--memory-seconds", type=float, default=300, help="memory phase limit")
    parser.add_argument("--soak-rounds", type=int, default=20, help="per soak client (4)")
    parser.add_argument("--phases", default="load,memory,soak", help="any of load,memory,soak")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    opener = gzip.open if args.test_set.endswith(".gz") else open
    with opener(args.test_set, "rt", encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line, _ in zip(f, range(args.sentences))]
    reference = reference_translations(args, sentences)
    settings = f"beam {args.beam}, {args.quantize or args.dtype}, {len(sentences)} sentences"
    print(f"# translate serve, {args.model}: {settings}")
    if "load" in phases:
        run_load(args, sentences, reference)
    if "memory" in phases:
        run_memory(args, sentences)
    if "soak" in phases:
        with server(args) as (url, process):
            counts = asyncio.run(soak(url, sentences, reference, args.soak_rounds, 4))
            alive = process.poll() is None
        print("soak: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
        print(f"soak: server alive at the end: {alive}")


def run_load(args: argparse.Namespace, sentences: list[str], reference: list[str]) -> None:
    """The table of sentences/s and latency by clients, batched and unbatched."""
    print(
        f"{'mode':<10} {'clients':>7} {'requests':>8} {'sentences/s':>11} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    )
    levels: dict[tuple[str, int], Level] = {}
    for mode, extra in (("batched", []), ("unbatched", UNBATCHED)):
        with server(args, extra) as (url, _):
            asyncio.run(load(url, sentences, 4, 20, args.seconds))  # warm up
            for clients in args.clients:
                level = asyncio.run(load(url, sentences, clients, args.requests, args.seconds))
                levels[mode, clients] = level
                print(level.row(mode), flush=True)
    if ("batched", 32) in levels and ("unbatched", 32) in levels:
        ratio = levels["batched", 32].rate / levels["unbatched", 32].rate
        print(f"at 32 clients, batched / unbatched sentences/s: {ratio:.2f}x")
    checked, differ = compare(list(levels.values()), reference)
    print(f"served vs `translate translate`: {checked} sentences, {len(differ)} differ")
    if differ:
        print("\n".join(differ[:20]))


def run_memory(args: argparse.Namespace, sentences: list[str]) -> None:
    """Peak RSS after the first and after all of --memory-requests requests (32 clients)."""
    first, total = args.memory_requests
    with server(args) as (url, process):
        deadline = time.perf_counter() + args.memory_seconds
        done = len(asyncio.run(load(url, sentences, 32, first, args.memory_seconds)).latencies)
        after_first = peak_rss_mib(process.pid)
        left = max(deadline - time.perf_counter(), 0)
        done += len(asyncio.run(load(url, sentences, 32, total - done, left)).latencies)
        after_all = peak_rss_mib(process.pid)
    change = 100 * (after_all / after_first - 1)
    print(
        f"peak RSS (VmHWM): {after_first:.0f} MiB after {first} requests, "
        f"{after_all:.0f} MiB after {done} ({change:+.1f}%)"
    )


if __name__ == "__main__":
    main()
