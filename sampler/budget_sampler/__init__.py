"""budget-sampler: many samples per prompt with a shared-prefix KV cache, and budget-matched evaluation."""
from .api import LoadOptions, Sampler, SampleStream
from .errors import InvalidInput
from .params import Completion, GenerationStats, SamplingParams

__all__ = ["Sampler", "SampleStream", "LoadOptions", "SamplingParams", "Completion", "GenerationStats", "InvalidInput"]
