"""budget-sampler: many samples per prompt with a shared-prefix KV cache, and budget-matched evaluation."""
import kernels as _kernels

if not getattr(_kernels, "__budget_sampler__", False):
    raise ImportError(
        f"`kernels` resolves to {getattr(_kernels, '__file__', _kernels)!r}, not budget-sampler's kernels "
        "package (Hugging Face distributes an unrelated `kernels`); uninstall it or fix sys.path")

from .api import LoadOptions, Sampler, SampleStream  # noqa: E402
from .errors import InvalidInput  # noqa: E402
from .params import Completion, GenerationStats, SamplingParams  # noqa: E402

__all__ = ["Sampler", "SampleStream", "LoadOptions", "SamplingParams", "Completion", "GenerationStats", "InvalidInput"]
