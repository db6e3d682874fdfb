"""The model runner: per-slot sampling state kept on the device, and the decode step over it, run
eagerly or replayed from a CUDA graph (nano-vllm's model runner, gpt-fast's decode_one_token).

The host writes a slot's state when a sample is admitted, and one block-table entry when a sample
grows into a new block. Which slots decode, grouped by prompt, goes to the batch buffers only when
that set changes. The step reads everything else by slot id on the device, runs the forward and the
sampling, and advances each row's token and step there. Nothing in the step reads a tensor's value
on the host, so it can be captured; its one host sync is the caller reading back the sampled tokens
and log-probs. On CPU the same buffers are used eagerly, so tests exercise the same bookkeeping.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

import budget_sampler_kernels as kernels

from .cache import BlockPool, SuffixBatch, block_tables, cdiv
from .memory import release_cached
from .sequence import Sample

logger = logging.getLogger("budget_sampler")


@dataclass
class BlockUpdate:
    """A sample grew into a new KV block: its slot, the block's position in its table, the block."""
    slot: int
    index: int
    block: int


@dataclass
class BatchGroup:
    """The decode batch's rows of one prompt: their slots, and the prompt's prefix blocks and length."""
    slots: list[int]
    prefix_blocks: list[int]
    prefix_len: int


@dataclass
class Launched:
    """A decode step started by `ModelRunner.launch`: its [2, rows] tokens and log-probs on the host
    once `done` (a CUDA event; None on CPU, where the step has ended) has passed."""
    out: torch.Tensor
    done: Optional[torch.cuda.Event]


def graph_batch_sizes(max_batch_size: int) -> list[int]:
    """Padded batch sizes with a captured graph, as in vLLM: 1, 2, 4, 8, then steps of 16."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch_size] + list(range(16, max_batch_size, 16))
    return sizes + [max_batch_size]


class ModelRunner:
    def __init__(self, model, pool: BlockPool, max_batch_size: int, cuda_graphs: bool):
        self.model, self.pool = model, pool
        device = pool.device
        slots = max_batch_size + 1
        self.scratch = max_batch_size  # padded rows of a graph read and write this slot only
        self.max_rows = max_batch_size  # the largest batch the step runs (lower if a capture ran out of memory)
        max_blocks = cdiv(model.cfg.max_context, pool.block_size) + 1

        def zeros(*shape, dtype=torch.int64):
            return torch.zeros(*shape, dtype=dtype, device=device)

        # per slot: the last sampled token, tokens generated so far (the RNG step and the suffix
        # length), where the suffix starts, the RNG key, the sampling parameters, the block table
        self.token, self.step, self.prompt_len = zeros(slots), zeros(slots), zeros(slots)
        self.seed, self.index = zeros(slots), zeros(slots)
        # neutral sampling parameters for slots no sample has used (the scratch slot's padding rows)
        self.temperature = torch.ones(slots, dtype=torch.float32, device=device)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=device)
        self.top_k, self.min_p = zeros(slots, dtype=torch.int32), zeros(slots, dtype=torch.float32)
        self.block_table = zeros(slots, max_blocks, dtype=torch.int32)
        self.step[self.scratch] = 1
        # the batch: slot of each row, rows sorted by prompt group (plus one group for padding)
        self.rows = torch.full((max_batch_size,), self.scratch, dtype=torch.int64, device=device)
        self.row_ptr = zeros(max_batch_size + 2, dtype=torch.int32)
        self.prefix_tables = zeros(max_batch_size + 1, max_blocks, dtype=torch.int32)
        self.prefix_lens = zeros(max_batch_size + 1, dtype=torch.int32)
        self.out = zeros(2, max_batch_size, dtype=torch.float64)  # sampled tokens and log-probs
        self.batch_size = self.padded_size = self.num_groups = 0
        # batches are padded to the sizes with a captured graph (those that fit: _keep_captured)
        self.padded_sizes: list[int] = graph_batch_sizes(max_batch_size) if cuda_graphs else []
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        # the decode step's logits, in one buffer that every graph writes (top_logprobs reads it)
        weight = model.embed_tokens.weight
        self._logits = torch.empty(max_batch_size, model.cfg.vocab_size, dtype=weight.dtype, device=device)
        self.logits = self._logits[:0]  # the last step's rows
        if cuda_graphs:
            self._capture()

    def write_slots(self, samples: Sequence[Sample]) -> None:
        """A sample's whole state, when it is admitted or readmitted after preemption."""
        device = self.token.device
        slots = torch.tensor([s.slot for s in samples], device=device)
        params = [s.request.params for s in samples]
        for buf, values in ((self.token, [s.token_ids[-1] if s.token_ids else 0 for s in samples]),
                            (self.step, [len(s.token_ids) for s in samples]),
                            (self.prompt_len, [len(s.request.prompt_ids) for s in samples]),
                            (self.seed, [s.request.seed for s in samples]),
                            (self.index, [s.index for s in samples]),
                            (self.temperature, [p.temperature for p in params]),
                            (self.top_k, [p.top_k for p in params]),
                            (self.top_p, [p.top_p for p in params]),
                            (self.min_p, [p.min_p for p in params])):
            buf[slots] = torch.tensor(values, dtype=buf.dtype, device=device)
        self.block_table[slots] = block_tables([s.blocks for s in samples], self.block_table.shape[1]).to(device)

    def set_blocks(self, updates: list[BlockUpdate]) -> None:
        if updates:
            slot, j, block = torch.tensor([(u.slot, u.index, u.block) for u in updates],
                                          device=self.token.device).unbind(1)
            self.block_table[slot, j] = block.to(torch.int32)

    def set_batch(self, groups: list[BatchGroup]) -> None:
        """The decode batch, grouped by prompt."""
        rows = [slot for g in groups for slot in g.slots]
        size = len(rows)
        padded = next(b for b in self.padded_sizes if b >= size) if self.padded_sizes else size
        # a padded batch of `padded` rows has padded + 1 groups: the real ones, one of padding rows
        # on the scratch slot with no prefix, then empty ones
        num_groups = padded + 1 if self.padded_sizes else len(groups)
        counts = [len(g.slots) for g in groups] + [padded - size] + [0] * (num_groups - len(groups) - 1)
        tables = block_tables([g.prefix_blocks for g in groups] + [[]] * (num_groups - len(groups)),
                              self.prefix_tables.shape[1])
        lens = [g.prefix_len for g in groups] + [0] * (num_groups - len(groups))
        self.rows[:padded] = torch.tensor(rows + [self.scratch] * (padded - size))
        self.row_ptr[:num_groups + 1] = torch.tensor([0] + counts[:num_groups]).cumsum(0)
        self.prefix_tables[:num_groups] = tables
        self.prefix_lens[:num_groups] = torch.tensor(lens, dtype=torch.int32)
        self.batch_size, self.padded_size, self.num_groups = size, padded, num_groups

    def launch(self) -> Launched:
        """Start one decode step of the batch. Its sampled tokens and log-probs are copied out as
        soon as it ends, so the next steps may be launched before `collect` reads them: on CUDA
        the host goes on (the engine's overlap) while the GPU runs the step."""
        graph = self.graphs.get(self.padded_size)
        if graph is not None:
            graph.replay()
            self.logits = self._logits[:self.padded_size]
        else:
            self._decode_step(self.padded_size, self.num_groups)
        out = self.out[:, :self.batch_size]
        if not out.is_cuda:
            return Launched(out.clone(), None)
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return Launched(host, done)

    @staticmethod
    def collect(launched: Launched) -> tuple[list[int], list[float]]:
        """A launched step's sampled token and log-prob per row (waits for the step on CUDA)."""
        if launched.done is not None:
            launched.done.synchronize()
        tokens, logprobs = launched.out.tolist()
        return [int(t) for t in tokens], logprobs

    def _decode_step(self, size: int, num_groups: int) -> None:
        rows = self.rows[:size]
        steps = self.step[rows]
        batch = SuffixBatch(self.pool, self.pool, self.row_ptr[:num_groups + 1], self.prefix_tables[:num_groups],
                            self.prefix_lens[:num_groups], self.block_table[rows], steps.to(torch.int32))
        hidden = self.model(self.token[rows], self.prompt_len[rows] + steps - 1, batch)
        self._sample(rows, self.model.logits(hidden, out=self._logits[:size]), steps)

    def top_logprobs(self, rows: list[int], k: int) -> list[list[tuple[int, float]]]:
        """The k most likely tokens of the last step's given rows and their log-probs under the
        unmodified distribution, as the sampled tokens' (outside the graph: only when asked)."""
        if not rows:
            return []
        logits = self.logits[torch.tensor(rows, device=self.logits.device)].float()
        top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
        return [list(zip(ids, values)) for ids, values in zip(top.indices.tolist(), top.values.tolist())]

    def _sample(self, rows: torch.Tensor, logits: torch.Tensor, steps: torch.Tensor) -> None:
        self.logits = logits
        tokens, logprobs = kernels.sample(logits, self.temperature[rows], self.top_k[rows], self.top_p[rows],
                                          self.min_p[rows], self.seed[rows], self.index[rows], steps)
        self.token[rows] = tokens
        self.step[rows] = steps + 1
        self.step[self.scratch:self.scratch + 1].fill_(1)  # not `= 1`: a host-to-device copy, uncapturable
        self.out[0, :len(rows)] = tokens
        self.out[1, :len(rows)] = logprobs

    def sample_first(self, samples: Sequence[Sample], logits: torch.Tensor) -> tuple[list[int], list[float]]:
        """First tokens of newly admitted samples, drawn from their prompts' logits (eager)."""
        rows = torch.tensor([s.slot for s in samples], device=self.token.device)
        self._sample(rows, logits, self.step[rows])
        tokens, logprobs = self.out[:, :len(samples)].tolist()
        return [int(t) for t in tokens], logprobs

    def recompute(self, samples: Sequence[Sample]) -> None:
        """Rebuild the suffix KV of readmitted samples from their tokens (all but the last, which the
        next decode step feeds): one teacher-forced pass over their shared prefixes (eager)."""
        groups: dict[int, list[Sample]] = {}
        for s in samples:
            if len(s.token_ids) > 1:
                groups.setdefault(s.request.request_id, []).append(s)
        if not groups:
            return
        device = self.token.device
        tokens, positions, suffix_lens, slots, counts, prefix_tables, prefix_lens = [], [], [], [], [], [], []
        for members in groups.values():
            req = members[0].request
            counts.append(sum(len(s.token_ids) - 1 for s in members))
            prefix_tables.append(req.prefix_blocks)
            prefix_lens.append(len(req.prompt_ids))
            for s in members:
                t = len(s.token_ids) - 1
                tokens += s.token_ids[:-1]
                positions += range(len(req.prompt_ids), len(req.prompt_ids) + t)
                suffix_lens += range(1, t + 1)
                slots += [s.slot] * t
        table = block_tables(prefix_tables, self.prefix_tables.shape[1])

        def tensor(values, dtype=torch.int64):
            return torch.tensor(values, dtype=dtype, device=device)

        batch = SuffixBatch(self.pool, self.pool, tensor([0] + counts).cumsum(0).to(torch.int32), table.to(device),
                            tensor(prefix_lens, torch.int32), self.block_table[tensor(slots)],
                            tensor(suffix_lens, torch.int32))
        self.model(tensor(tokens), tensor(positions), batch)

    @torch.inference_mode()
    def _capture(self) -> None:
        """Capture the decode step once per padded batch size, largest first so the smaller graphs
        reuse its memory pool; each is warmed up eagerly first (that compiles its kernels)."""
        pool = None
        for size in reversed(self.padded_sizes):
            try:
                graph = self._capture_one(size, pool)
            except torch.OutOfMemoryError:
                release_cached(self.token.device)
                continue
            pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize()
        self.batch_size = self.padded_size = self.num_groups = 0
        self._keep_captured()

    def _capture_one(self, size: int, pool) -> torch.cuda.CUDAGraph:
        self.rows[:size] = self.scratch  # all rows padding, in one group with no prefix
        self.row_ptr[0], self.row_ptr[1:] = 0, size
        self.prefix_lens.zero_()
        self._decode_step(size, size + 1)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self._decode_step(size, size + 1)
        return graph

    def _keep_captured(self) -> None:
        """Batches are padded to the sizes captured; where the largest ran out of memory, the batch is
        capped at the largest that did not (none: eager, where the engine halves a step that fails)."""
        lost = [size for size in self.padded_sizes if size not in self.graphs]
        if lost:
            self.padded_sizes = sorted(self.graphs)
            self.max_rows = max(self.padded_sizes, default=self.max_rows)
            logger.warning("out of memory capturing the decode step's CUDA graphs for batches of %s: batches of at "
                           "most %d from now on", ", ".join(map(str, lost)), self.max_rows)
