"""Dynamic batching for ``translate serve``: sentences of concurrent requests wait in queues
by decoding options (a sampled request in a queue of its own); one batcher task takes the
oldest queue when it is full or its first sentence has waited long enough, and decodes it as
one length-sorted batch in a single worker thread, so that the event loop keeps answering and
two decodes never compete for the cores."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..decoding import DecodeOptions
from ..translator import Translation, Translator


@dataclass(frozen=True)
class Group:
    """The queue a sentence waits in: sentences are batched only with equal options, and
    those of a sampled request only with each other (its sampling is seeded per request)."""

    options: DecodeOptions
    request: int = 0  # > 0: the number of a request decoded on its own

    @property
    def alone(self) -> bool:
        return self.request > 0


@dataclass
class Job:
    """One request's sentences on their way through the batcher."""

    lines: list[str]
    future: asyncio.Future
    results: list
    remaining: int


@dataclass
class Waiting:
    """One sentence in the queue: its request, its place there, and its source subwords."""

    job: Job
    index: int
    tokens: int
    arrived: float


class Overloaded(Exception):
    """A request refused because the queue holds as many sentences as it may."""


class Batcher:
    """Gathers the sentences of concurrent requests into length-sorted batches of equal
    decoding options and decodes them one batch at a time in a single worker thread."""

    def __init__(
        self,
        translator: Translator,
        max_sentences: int,
        max_tokens: int,
        wait_s: float,
        max_queued: int = 0,
    ):
        self.translator = translator
        self.max_sentences, self.max_tokens, self.wait_s = max_sentences, max_tokens, wait_s
        self.max_queued = max_queued  # sentences waiting at most (0: no limit)
        self.queues: dict[Group, deque[Waiting]] = {}  # oldest group first
        self.queued_tokens: dict[Group, int] = {}
        self.requests_alone = itertools.count(1)  # numbers the groups of sampled requests
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.decoding = 0  # sentences in the batch being decoded
        self.stats = {"batches": 0, "sentences": 0, "largest_batch": 0}
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop taking batches (called once the server has answered every request)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def translate(self, lines: list[str], options: DecodeOptions) -> list[Translation]:
        """The translations of ``lines``, in order, decoded together with other requests'.
        Raises :class:`Overloaded`, queueing nothing, when they would not fit in the queue."""
        queued = self.queued()
        if self.max_queued and queued + len(lines) > self.max_queued:
            raise Overloaded(
                f"the server is busy: {queued} sentences are waiting and it queues at most "
                f"{self.max_queued} (--max-queued-sentences); retry later"
            )
        loop = asyncio.get_running_loop()
        group = Group(options, next(self.requests_alone) if options.sampling else 0)
        job = Job(lines, loop.create_future(), [None] * len(lines), len(lines))
        limit, now = self.translator.max_source_len, loop.time()
        tokens = [min(len(ids), limit) + 1 for ids in self.translator.src_vocab.encode(lines)]
        queue = self.queues.setdefault(group, deque())
        queue.extend(Waiting(job, index, count, now) for index, count in enumerate(tokens))
        self.queued_tokens[group] = self.queued_tokens.get(group, 0) + sum(tokens)
        self.arrived.set()
        return await job.future

    def queued(self) -> int:
        """Sentences waiting for a batch (those of answered requests until they are skipped)."""
        return sum(len(queue) for queue in self.queues.values())

    def health(self) -> dict:
        return {
            "queued_sentences": self.queued(),
            "decoding_sentences": self.decoding,
            **self.stats,
        }

    async def _run(self) -> None:
        while True:
            await self._wait_for_batch()
            group, batch = self._take()
            if batch:
                await self._decode(group.options, batch)

    async def _wait_for_batch(self) -> None:
        """Until something waits, then until the oldest group has a full batch or its first
        sentence has waited ``wait_s``."""
        while not self.queues:
            self.arrived.clear()
            await self.arrived.wait()
        group = self._oldest()
        first = self.queues[group][0].arrived
        loop = asyncio.get_running_loop()
        while not self._full(group) and loop.time() < first + self.wait_s:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), first + self.wait_s - loop.time())
            except asyncio.TimeoutError:
                break

    def _oldest(self) -> Group:
        return min(self.queues, key=lambda group: self.queues[group][0].arrived)

    def _full(self, group: Group) -> bool:
        return (
            group.alone  # a request decoded on its own has all its sentences here
            or len(self.queues[group]) >= self.max_sentences
            or self.queued_tokens[group] >= self.max_tokens
        )

    def _take(self) -> tuple[Group, list[Waiting]]:
        """The oldest group's waiting sentences, up to the caps (at least one; all of a
        request decoded on its own), skipping those of requests already answered."""
        group = self._oldest()
        queue, batch, tokens = self.queues[group], [], 0
        while queue and (
            group.alone
            or not batch
            or (len(batch) < self.max_sentences and tokens + queue[0].tokens <= self.max_tokens)
        ):
            waiting = queue.popleft()
            self.queued_tokens[group] -= waiting.tokens
            if not waiting.job.future.done():  # not failed or cancelled meanwhile
                batch.append(waiting)
                tokens += waiting.tokens
        if not queue:
            del self.queues[group], self.queued_tokens[group]
        return group, batch

    async def _decode(self, options: DecodeOptions, batch: list[Waiting]) -> None:
        """Translate one batch in the worker thread and hand each request its lines."""
        lines = [waiting.job.lines[waiting.index] for waiting in batch]
        decode = functools.partial(self.translator.translate_batch, lines, options)
        self.decoding = len(batch)
        try:
            translations = await asyncio.get_running_loop().run_in_executor(self.executor, decode)
        except Exception as err:  # the whole batch failed: every request in it hears why
            for waiting in batch:
                if not waiting.job.future.done():
                    waiting.job.future.set_exception(err)
            return
        finally:
            self.decoding = 0
        self.stats["batches"] += 1
        self.stats["sentences"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        for waiting, translation in zip(batch, translations):
            job = waiting.job
            if job.future.done():
                continue
            job.results[waiting.index] = translation
            job.remaining -= 1
            if job.remaining == 0:
                job.future.set_result(job.results)
