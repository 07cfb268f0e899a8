"""Dynamic batching for ``translate serve``: sentences of concurrent requests wait in queues
by decoding options (a sampled request in a queue of its own); one batcher task takes the
queue whose turn it is when it is full or its first sentence has waited long enough, and
decodes a length-sorted batch of it in a single worker thread, so that the event loop keeps
answering and two decodes never compete for the cores.

Fairness: a batch is capped in sentences and in source subwords weighted by beam width, so a
large request is decoded in slices; after each slice its queue goes behind the queues that
waited meanwhile, and within a queue the batch takes one sentence of each request in turn.
A small request therefore waits for about one slice, not for a large request to finish."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..decoding import DecodeOptions, Translation

if TYPE_CHECKING:
    from ..export.engine import OnnxTranslator
    from ..translator import Translator


def search_rows(options: DecodeOptions) -> int:
    """The hypotheses a search keeps per sentence: the beam, or the samples drawn."""
    return options.n_best if options.sampling is not None else options.beam


@dataclass(frozen=True)
class Group:
    """The queue a sentence waits in: sentences are batched only with equal options, and
    those of a sampled request only with each other (its sampling is seeded per request)."""

    options: DecodeOptions
    request: int = 0  # > 0: the number of a request decoded on its own

    @property
    def alone(self) -> bool:
        return self.request > 0


@dataclass(eq=False)  # compared and hashed by identity: a key of Queue.jobs
class Job:
    """One request's sentences on their way through the batcher."""

    lines: list[str]
    future: asyncio.Future
    results: list
    remaining: int


@dataclass
class Waiting:
    """One sentence in a queue: its request, its place there, and its cost in a batch."""

    job: Job
    index: int
    cost: float  # (source subwords + 1) x search rows / the default options' rows


class Queue:
    """One group's waiting sentences by request (in the order they take turns), their total
    cost, and ``turn``: the arrival of its first sentence, then the end of its last batch."""

    def __init__(self, turn: float):
        self.jobs: dict[Job, deque[Waiting]] = {}
        self.turn, self.cost, self.sentences = turn, 0.0, 0

    def pop(self, job: Job) -> Waiting:
        """The next sentence of ``job``, which then goes behind the other requests."""
        waiting = self.jobs.pop(job)
        head = waiting.popleft()
        if waiting:
            self.jobs[job] = waiting
        self.cost -= head.cost
        self.sentences -= 1
        return head

    def drop(self, job: Job) -> None:
        for waiting in self.jobs.pop(job):
            self.cost -= waiting.cost
            self.sentences -= 1


class Overloaded(Exception):
    """A request refused because the queue holds as many sentences as it may."""


class Batcher:
    """Gathers the sentences of concurrent requests into length-sorted batches of equal
    decoding options and decodes them one batch at a time in a single worker thread."""

    def __init__(
        self,
        translator: Translator | OnnxTranslator,
        max_sentences: int,
        max_tokens: int,
        wait_s: float,
        max_queued: int = 0,
        default_rows: int = 1,
    ):
        self.translator = translator
        self.max_sentences, self.max_tokens, self.wait_s = max_sentences, max_tokens, wait_s
        self.max_queued = max_queued  # sentences waiting at most (0: no limit)
        self.default_rows = default_rows  # a sentence of default options costs its tokens
        self.queues: dict[Group, Queue] = {}
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

    def source_tokens(self, lines: list[str]) -> list[int]:
        """Each line's source subwords as decoded (cut to the model's limit), EOS included."""
        limit = self.translator.max_source_len
        return [min(len(ids), limit) + 1 for ids in self.translator.src_vocab.encode(lines)]

    async def translate(
        self, lines: list[str], options: DecodeOptions, tokens: list[int]
    ) -> list[Translation]:
        """The translations of ``lines`` (of ``tokens`` source subwords each), in order,
        decoded together with other requests'. Raises :class:`Overloaded`, queueing nothing,
        when they would not fit in the queue."""
        queued = self.queued()
        if self.max_queued and queued + len(lines) > self.max_queued:
            raise Overloaded(
                f"the server is busy: {queued} sentences are waiting and it queues at most "
                f"{self.max_queued} (--max-queued-sentences); retry later"
            )
        loop = asyncio.get_running_loop()
        group = Group(options, next(self.requests_alone) if options.sampling else 0)
        job = Job(lines, loop.create_future(), [None] * len(lines), len(lines))
        weight = search_rows(options) / self.default_rows
        waiting = deque(Waiting(job, i, count * weight) for i, count in enumerate(tokens))
        queue = self.queues.setdefault(group, Queue(loop.time()))
        queue.jobs[job] = waiting
        queue.cost += sum(w.cost for w in waiting)
        queue.sentences += len(waiting)
        self.arrived.set()
        return await job.future

    def queued(self) -> int:
        """Sentences waiting for a batch (those of answered requests until they are skipped)."""
        return sum(queue.sentences for queue in self.queues.values())

    def health(self) -> dict:
        return {
            "queued_sentences": self.queued(),
            "decoding_sentences": self.decoding,
            **self.stats,
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            group = self._next()
            queue, batch = self.queues[group], self._take(group)
            if batch:
                await self._decode(group.options, batch)
            if self.queues.get(group) is queue:  # more of it waits: behind those who waited
                queue.turn = loop.time()

    async def _wait_for_batch(self) -> None:
        """Until something waits, then until the next group has a full batch or its turn
        came ``wait_s`` ago."""
        while not self.queues:
            self.arrived.clear()
            await self.arrived.wait()
        group = self._next()
        turn = self.queues[group].turn
        loop = asyncio.get_running_loop()
        while not self._full(group) and loop.time() < turn + self.wait_s:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), turn + self.wait_s - loop.time())
            except asyncio.TimeoutError:
                break

    def _next(self) -> Group:
        """The group whose turn it is: the one that has waited longest since it arrived or
        since its last batch."""
        return min(self.queues, key=lambda group: self.queues[group].turn)

    def _full(self, group: Group) -> bool:
        queue = self.queues[group]
        return (
            group.alone  # a request decoded on its own has all its sentences here
            or queue.sentences >= self.max_sentences
            or queue.cost >= self.max_tokens
        )

    def _take(self, group: Group) -> list[Waiting]:
        """A batch of the group's waiting sentences, one of each request in turn, up to the
        caps (at least one; all of a request decoded on its own), skipping those of requests
        already answered."""
        queue, batch, cost = self.queues[group], [], 0.0
        while queue.jobs:
            job, waiting = next(iter(queue.jobs.items()))
            if job.future.done():  # failed or cancelled meanwhile: nothing of it is decoded
                queue.drop(job)
                continue
            full = len(batch) >= self.max_sentences or cost + waiting[0].cost > self.max_tokens
            if batch and full and not group.alone:
                break
            batch.append(queue.pop(job))
            cost += batch[-1].cost
        if not queue.jobs:
            del self.queues[group]
        return batch

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
