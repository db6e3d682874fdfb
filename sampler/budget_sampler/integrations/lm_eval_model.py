"""lm-evaluation-harness adapter: `BudgetSamplerLM`, registered with lm-eval as "budget-sampler".

lm-eval asks for k samples of a prompt by sending the same (context, gen_kwargs) request k times
(a task's `repeats: k`). `generate_until` groups identical requests so that each group reaches the
engine as ONE prompt with n = k samples (one prefill, one shared prefix KV), sends groups that have
equal settings in one `generate` call, and answers in the original request order.

lm-eval is an optional extra. When it is importable the class subclasses its `LM` and registers
itself; when it is not, the class is a plain object with the same methods (usable with any request
objects that have `.args`, as the tests do), and `main`, the one entry point that needs the
harness, says how to install it. Run `python -m budget_sampler.integrations.lm_eval_model <lm_eval
arguments>` to use the `lm_eval` command line with this model available.
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Optional, Sequence

from ..errors import ContextOverflow, InvalidInput, check_context
from ..params import SamplingParams

try:
    import lm_eval.models  # noqa: F401  lm-eval loads its own models only into an empty registry
    from lm_eval.api.model import LM as _LMBase
    from lm_eval.api.registry import register_model as _register_model
except ImportError:
    _LMBase, _register_model = object, None

logger = logging.getLogger(__name__)

GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "min_p", "seed")


class BudgetSamplerLM(_LMBase):
    def __init__(self, pretrained: Optional[str] = None, *, sampler=None,
                 device: Optional[str] = None, dtype: Optional[str] = None,
                 max_batch_size: int = 256, max_gen_toks: int = 256, seed: Optional[int] = 1234,
                 batch_size=None):
        """Give `pretrained` (what `--model_args pretrained=...` passes) or a loaded `sampler`.
        `batch_size` is accepted because lm-eval always passes it, and ignored: the engine
        batches by itself up to `max_batch_size` samples. lm-eval passes a CUDA device by
        default; without CUDA we fall back to the CPU, as its Hugging Face model does."""
        super().__init__()
        if (pretrained is None) == (sampler is None):
            raise InvalidInput("give exactly one of pretrained=<checkpoint> or sampler=<Sampler>")
        if sampler is None:
            import torch

            from .. import Sampler
            if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
                if device is not None:
                    logger.warning("device %s is not available; using the CPU", device)
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
            sampler = Sampler.from_pretrained(pretrained, device=device, dtype=dtype,
                                              max_batch_size=int(max_batch_size))
        self.sampler = sampler
        self.max_gen_toks = int(max_gen_toks)
        self.seed = seed

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests' `args` are (context, gen_kwargs); each returns one continuation."""
        results: list[Optional[str]] = [None] * len(requests)
        batches: dict[tuple[str, int], tuple[SamplingParams, list[tuple[str, list[int]]]]] = {}
        for context, gen_kwargs, positions in group_identical(requests):
            params = self._params(gen_kwargs, len(positions))
            self._check_fits(context, params.max_new_tokens)
            batch = batches.setdefault((_key(gen_kwargs), params.n), (params, []))
            batch[1].append((context, positions))
        for params, groups in batches.values():
            outputs = self.sampler.generate([context for context, _ in groups], params,
                                            progress=not disable_tqdm)
            for (_, positions), samples in zip(groups, outputs):
                texts = [c.text for c in samples]
                if len(texts) == 1:  # greedy: one sample answers every identical request
                    texts *= len(positions)
                for position, text in zip(positions, texts):
                    results[position] = text
        return results

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding would produce it). Requests
        sharing a context are scored in one call against one prefill of it."""
        results: list[Optional[tuple[float, bool]]] = [None] * len(requests)
        by_context: dict[str, list[tuple[int, str]]] = {}
        for position, request in enumerate(requests):
            context, continuation = request.args
            # lm-eval's convention: a context's trailing whitespace belongs to the continuation
            stripped = context.rstrip()
            by_context.setdefault(stripped, []).append((position, context[len(stripped):] + continuation))
        tokenizer, window = self.sampler.tokenizer, self.sampler.max_context
        for context, items in by_context.items():
            texts = [text for _, text in items]
            targets = (self.sampler.encode_after(context, texts) if context else
                       [tokenizer(text, add_special_tokens=False).input_ids for text in texts])
            longest = max(map(len, targets))
            if longest >= window:
                raise InvalidInput(f"a continuation of {longest} tokens does not fit the model's "
                                   f"context of {window} tokens")
            prompt_ids = self._context_ids(context)[-(window - longest):]  # lm-eval truncates left
            logprobs = self.sampler.score_ids(prompt_ids, targets)
            greedy = self._greedy(prompt_ids, longest)
            for (position, _), ids, lps in zip(items, targets, logprobs):
                results[position] = (float(sum(lps)), greedy[:len(ids)] == ids)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log p(text) from the prefix token, in windows of the model's context when it is longer:
        each token is predicted once, with as much preceding text as fits."""
        window = self.sampler.max_context
        results = []
        for request in requests:
            (text,) = request.args
            ids = self.sampler.tokenizer(text, add_special_tokens=False).input_ids
            tokens = [self._prefix_token_id()] + ids  # ids[j] is predicted from tokens[:j + 1]
            total = 0.0
            for start in range(0, len(ids), window - 1):
                end = min(start + window - 1, len(ids))
                first = max(0, end + 1 - window)
                total += sum(self.sampler.score_ids(tokens[first:start + 1], [ids[start:end]])[0])
            results.append(total)
        return results

    def _params(self, gen_kwargs: dict, group_size: int) -> SamplingParams:
        """lm-eval's gen_kwargs as SamplingParams. Like its HF and vLLM models, sampling happens
        only when asked for (do_sample or a temperature > 0); greedy needs one sample per group."""
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if unknown:
            raise InvalidInput(f"gen_kwargs {unknown} are not supported by budget-sampler; "
                               f"supported: {', '.join(GEN_KWARGS)}")
        until = gen_kwargs.get("until") or []
        do_sample = gen_kwargs.get("do_sample")
        temperature = gen_kwargs.get("temperature", 1.0 if do_sample else 0.0)
        if do_sample is False:
            temperature = 0.0
        return SamplingParams(
            n=group_size if temperature > 0 else 1, temperature=temperature,
            top_p=gen_kwargs.get("top_p", 1.0), top_k=gen_kwargs.get("top_k", 0),
            min_p=gen_kwargs.get("min_p", 0.0),
            max_new_tokens=gen_kwargs.get("max_gen_toks", self.max_gen_toks),
            stop=[until] if isinstance(until, str) else [s for s in until if s],
            seed=gen_kwargs.get("seed", self.seed))

    def _check_fits(self, context: str, max_gen_toks: int) -> None:
        """An overflow names lm-eval's flag to lower (task code defaults such as 1024 do not fit
        small models)."""
        try:
            check_context(len(self.sampler.encode(context)), max_gen_toks, self.sampler.max_context)
        except ContextOverflow as e:
            fix = (f"lower it with lm-eval's --gen_kwargs max_gen_toks={e.room}" if e.room > 0
                   else "the context alone fills it")
            raise InvalidInput(f"a context of {e.prompt_tokens} tokens + max_gen_toks ({e.new_tokens}) exceeds "
                               f"the model's context of {e.max_context} tokens: {fix}") from None

    def _context_ids(self, context: str) -> list[int]:
        return self.sampler.encode(context) if context else [self._prefix_token_id()]

    def _prefix_token_id(self) -> int:
        """What an empty context is conditioned on: BOS, else EOS (lm-eval's prefix_token_id)."""
        tokenizer = self.sampler.tokenizer
        token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if token_id is None:
            raise InvalidInput("an empty context needs a BOS or EOS token, and the tokenizer has neither")
        return token_id

    def _greedy(self, prompt_ids: list[int], length: int) -> list[int]:
        if length == 0:
            return []
        params = SamplingParams(temperature=0.0, max_new_tokens=length, ignore_eos=True)
        (_, completion), = list(self.sampler.stream_ids([prompt_ids], [params]))
        return completion.token_ids


def group_identical(requests) -> list[tuple[str, dict, list[int]]]:
    """(context, gen_kwargs, positions) per distinct request, in order of first appearance."""
    groups: dict[tuple[str, str], tuple[str, dict, list[int]]] = {}
    for position, request in enumerate(requests):
        context, gen_kwargs = request.args
        if not isinstance(gen_kwargs, dict):
            raise InvalidInput(f"gen_kwargs must be a dict, got {type(gen_kwargs).__name__}")
        group = groups.setdefault((context, _key(gen_kwargs)), (context, gen_kwargs, []))
        group[2].append(position)
    return list(groups.values())


def _key(gen_kwargs: dict) -> str:
    return json.dumps(gen_kwargs, sort_keys=True, default=repr)


if _register_model is not None:
    _register_model("budget-sampler")(BudgetSamplerLM)


def main(argv: Sequence[str] | None = None) -> int:
    """`lm_eval`'s own command line, with this module imported so `--model budget-sampler` works."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        print("lm-evaluation-harness is not installed: pip install 'budget-sampler[lm-eval]'",
              file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
