"""Tensor parallel: one model split over N ranks (processes; one GPU each on CUDA), with
torch.distributed (NCCL on CUDA, gloo on CPU).

- sharding.py: Megatron-style split as in gpt-fast / nano-vllm. Attention heads, KV heads and the
  MLP's intermediate size are divided over the ranks, so each rank runs the same decoder with
  num_heads / N and num_kv_heads / N, and its KV pool and prompt prefixes hold only its heads: the
  cache and the kernels work unchanged. o_proj and down_proj outputs are all-reduced. Embeddings and
  the LM head are replicated, so every rank ends the step with the same full logits.
- replica.py: every rank runs the same Engine on the same calls in the same order (rank 0 sends
  each call, ranks >= 1 replay it), so scheduling and sampling (keyed by seed, sample index and
  step) are identical everywhere and no token is ever broadcast. That keeps the engine single-process
  code; the price is that every rank also does the host-side bookkeeping (detokenizing, stop strings).
- launch.py: Sampler.from_pretrained(..., tensor_parallel=N) spawns ranks 1..N-1 on this node (or
  joins torchrun's), and close() / exit stops them.
- watchdog.py: a spawned rank that exits or stops answering during a call fails that call with
  RankFailure naming the rank (its signs of life stop), instead of hanging rank 0.
"""
