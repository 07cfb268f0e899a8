"""translate serve's batcher: batches capped in sentences and beam-weighted subwords, the
wait for company, and fairness (a large request decoded in slices that small requests go
between), on a scripted translator; then a load test of small requests among heavy ones."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest

from tests.test_serve import call, running, wait_for_health
from translate.decoding import DecodeOptions, Sampling
from translate.serve.batching import Batcher
from translate.translator import Candidate, Translation, Translator

DEFAULTS = DecodeOptions()  # beam 5


class ScriptedTranslator:
    """Answers each line upper-cased and records every batch it is given as (lines, beam);
    each batch waits for ``gate`` (open unless a test closes it)."""

    max_source_len = 100

    def __init__(self):
        self.batches: list[tuple[list[str], int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.src_vocab = self

    def encode(self, lines: list[str]) -> list[list[int]]:
        return [[0] * len(line.split()) for line in lines]  # one subword a word

    def translate_batch(self, lines: list[str], options: DecodeOptions) -> list[Translation]:
        self.batches.append((list(lines), options.beam))
        self.gate.wait(timeout=30)
        return [Translation([Candidate(line.upper(), 0.0)]) for line in lines]


async def until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.005)


def batched(scenario, max_sentences=64, max_tokens=1000, wait_s=0.0, default_rows=5):
    """Run ``scenario(batcher, translator, submit)`` on a started batcher; ``submit(lines,
    options)`` queues a request and returns its task. Returns what the scenario returns."""
    translator = ScriptedTranslator()

    async def main():
        batcher = Batcher(translator, max_sentences, max_tokens, wait_s, default_rows=default_rows)
        batcher.start()

        def submit(lines, options=DEFAULTS):
            tokens = batcher.source_tokens(lines)
            return asyncio.ensure_future(batcher.translate(lines, options, tokens))

        try:
            return await asyncio.wait_for(scenario(batcher, translator, submit), 60)
        finally:
            translator.gate.set()
            await batcher.stop()

    return asyncio.run(main())


def lines_of(batches) -> list[list[str]]:
    return [lines for lines, _ in batches]


def test_a_request_is_decoded_in_slices_of_max_batch_sentences():
    async def scenario(batcher, translator, submit):
        answer = await submit(["a", "b", "c", "d", "e"])
        return [t.text for t in answer], lines_of(translator.batches)

    texts, batches = batched(scenario, max_sentences=2)
    assert texts == ["A", "B", "C", "D", "E"]
    assert batches == [["a", "b"], ["c", "d"], ["e"]]


def test_slices_hold_at_most_max_batch_tokens():
    async def scenario(batcher, translator, submit):
        await submit(["a", "b c", "d", "e f g", "h"])  # 2, 3, 2, 4 and 2 subwords with EOS
        return lines_of(translator.batches)

    assert batched(scenario, max_tokens=6) == [["a", "b c"], ["d", "e f g"], ["h"]]


@pytest.mark.parametrize("beam, slices", [(5, [4, 1]), (10, [2, 2, 1]), (1, [5])])
def test_a_wider_beam_fills_a_batch_sooner(beam, slices):
    """--max-batch-tokens counts subwords at the default beam (5): a sentence of beam 10
    counts twice, one of beam 1 a fifth."""

    async def scenario(batcher, translator, submit):
        await submit(["a", "b", "c", "d", "e"], DecodeOptions(beam=beam))  # 2 subwords each
        return [len(lines) for lines in lines_of(translator.batches)]

    assert batched(scenario, max_tokens=8) == slices


def test_a_small_request_goes_between_the_slices_of_a_large_one():
    """A large request (beam 10, in slices of two) is being decoded when a small one of other
    options arrives: the small one is the next batch, not the last."""

    async def scenario(batcher, translator, submit):
        translator.gate.clear()
        large = submit(["a", "b", "c", "d", "e", "f"], DecodeOptions(beam=10))
        await until(lambda: translator.batches)  # its first slice holds the worker
        small = submit(["z"])
        await until(lambda: batcher.queued() == 5)
        translator.gate.set()
        small_answer = await small
        assert not large.done()
        await large
        return [t.text for t in small_answer], translator.batches

    small, batches = batched(scenario, max_sentences=2)
    assert small == ["Z"]
    assert batches == [(["a", "b"], 10), (["z"], 5), (["c", "d"], 10), (["e", "f"], 10)]


def test_requests_of_the_same_options_take_turns_in_a_batch():
    async def scenario(batcher, translator, submit):
        translator.gate.clear()
        large = submit(["a", "b", "c", "d", "e", "f"])
        await until(lambda: translator.batches)
        small = submit(["z"])
        await until(lambda: batcher.queued() == 5)
        translator.gate.set()
        await asyncio.gather(large, small)
        return lines_of(translator.batches)

    assert batched(scenario, max_sentences=2) == [["a", "b"], ["c", "z"], ["d", "e"], ["f"]]


def test_the_first_sentence_waits_batch_wait_for_company():
    """With a 60 s wait and room for two, a lone sentence is not decoded until a second
    request fills the batch; both go in one batch."""

    async def scenario(batcher, translator, submit):
        first = submit(["a"])
        await asyncio.sleep(0.2)
        assert translator.batches == [] and not first.done()
        second = submit(["b"])
        await asyncio.gather(first, second)
        return lines_of(translator.batches)

    assert batched(scenario, max_sentences=2, wait_s=60) == [["a", "b"]]


def test_the_wait_for_company_ends():
    async def scenario(batcher, translator, submit):
        answer = await submit(["a"])
        return [t.text for t in answer]

    assert batched(scenario, max_sentences=2, wait_s=0.05) == ["A"]


def test_a_sampled_request_is_decoded_whole_and_alone():
    """Its draws come from one generator seeded for the request: one batch, whatever the caps,
    shared with no other request."""

    async def scenario(batcher, translator, submit):
        translator.gate.clear()
        sampled = submit(["a", "b", "c"], DecodeOptions(sampling=Sampling(seed=3)))
        plain = submit(["x", "y"])
        await until(lambda: batcher.queued() == 2)  # the sampled request went first, whole
        translator.gate.set()
        await asyncio.gather(sampled, plain)
        return lines_of(translator.batches)

    assert batched(scenario, max_sentences=1) == [["a", "b", "c"], ["x"], ["y"]]


def test_a_cancelled_request_is_not_decoded():
    async def scenario(batcher, translator, submit):
        translator.gate.clear()
        first = submit(["a"])
        await until(lambda: translator.batches)
        gone = submit(["b", "c"])
        await until(lambda: batcher.queued() == 2)
        gone.cancel()  # its client left, or the server stopped waiting for it
        kept = submit(["d"])
        translator.gate.set()
        await asyncio.gather(first, kept)
        return lines_of(translator.batches)

    assert batched(scenario) == [["a"], ["d"]]


# --- through the server: its settings reach the batcher -------------------------------------


def health(port: int) -> dict:
    status, answer = call(port, "GET", "/health")
    assert status == 200
    return answer


@pytest.mark.parametrize("cap", ["max_batch_sentences", "max_batch_tokens"])
def test_the_servers_batch_caps_slice_a_request(trained_dir, cap):
    """Five sentences of one request, with room for two a batch by sentences or by subwords
    (at the default beam): three batches."""
    lines = ["hund katze", "baum auto", "buch tisch", "stuhl haus", "hund baum"]
    translator = Translator.from_dir(trained_dir)
    tokens = [len(ids) + 1 for ids in translator.src_vocab.encode(lines)]
    room = {"max_batch_sentences": 2, "max_batch_tokens": max(tokens) * 2}[cap]
    assert sum(sorted(tokens)[:3]) > max(tokens) * 2  # so that no batch holds three
    with running(trained_dir, batch_wait_ms=0, **{cap: room}) as served:
        status, answer = call(served.port, "POST", "/translate", {"text": lines})
        assert status == 200
        assert [a["text"] for a in answer["translations"]] == translator.translate(lines)
        counters = health(served.port)
    assert (counters["batches"], counters["largest_batch"]) == (3, 2)


def test_the_servers_batch_wait_gathers_requests(trained_dir):
    """With --batch-wait-ms 60000 and room for two, a lone request waits for a second one,
    and both are decoded in one batch."""
    with running(trained_dir, batch_wait_ms=60000, max_batch_sentences=2) as served:
        answers = {}

        def send(line: str) -> None:
            answers[line] = call(served.port, "POST", "/translate", {"text": [line]})

        first = threading.Thread(target=send, args=("hund",))
        first.start()
        wait_for_health(served.port, lambda counters: counters["queued_sentences"] == 1)
        time.sleep(0.2)
        assert health(served.port)["batches"] == 0 and "hund" not in answers
        send("katze")
        first.join(timeout=30)
        assert health(served.port)["batches"] == 1
    assert answers["hund"][1]["translations"][0]["text"] == "dog"
    assert answers["katze"][1]["translations"][0]["text"] == "cat"


# --- under load --------------------------------------------------------------------------------

HEAVY = ["hund katze baum auto buch tisch"] * 48  # with beam 20: about two sentences a slice
ROUNDS, SMALL_PER_ROUND = 6, 3


def test_small_requests_are_answered_between_the_slices_of_heavy_ones(trained_dir, monkeypatch):
    """Rounds of one heavy request (48 sentences, beam 20: some 24 slices) and, once its first
    slice is decoded, three small ones sent one after another: each small request is answered
    before the heavy request sent before it. Prints the latencies (for the README)."""
    with running(trained_dir, batch_wait_ms=0, max_batch_tokens=60) as served:
        heavy_started = threading.Event()
        decode = served.translator.translate_batch

        def watched(lines, options):
            if options.beam == 20:
                heavy_started.set()
            return decode(lines, options)

        monkeypatch.setattr(served.translator, "translate_batch", watched)
        small_seconds, heavy_seconds = [], []
        for _ in range(ROUNDS):
            heavy_started.clear()
            heavy: dict = {}

            def send_heavy(heavy=heavy):
                start = time.monotonic()
                heavy["answer"] = call(
                    served.port, "POST", "/translate", {"text": HEAVY, "beam": 20}
                )
                heavy["done"] = time.monotonic()
                heavy_seconds.append(heavy["done"] - start)

            thread = threading.Thread(target=send_heavy)
            thread.start()
            assert heavy_started.wait(timeout=30)
            small_done = []
            for _ in range(SMALL_PER_ROUND):
                start = time.monotonic()
                status, answer = call(served.port, "POST", "/translate", {"text": ["haus"]})
                small_done.append(time.monotonic())
                small_seconds.append(small_done[-1] - start)
                assert status == 200 and answer["translations"][0]["text"] == "house"
            thread.join(timeout=60)
            assert heavy["answer"][0] == 200 and len(heavy["answer"][1]["translations"]) == 48
            assert all(done < heavy["done"] for done in small_done)
    cuts = statistics.quantiles(small_seconds, n=100)
    print(
        f"\nsmall requests among heavy ones: {len(small_seconds)} answered, p50 "
        f"{1000 * cuts[49]:.0f} ms, p99 {1000 * cuts[98]:.0f} ms, max "
        f"{1000 * max(small_seconds):.0f} ms; heavy requests: median "
        f"{1000 * statistics.median(heavy_seconds):.0f} ms"
    )
