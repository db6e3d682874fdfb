"""lm-evaluation-harness itself (simple_evaluate) on local tasks, offline: through the server with
its `local-completions` model (a loglikelihood task and a generate_until task, with the small
context's flags), and in-process with our LM, whose repeats differ where the server's cannot."""
import json

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from budget_sampler import Sampler
from budget_sampler.integrations.lm_eval_model import BudgetSamplerLM

from serving import serving

DOCS = [{"prompt": "def add(a, b):\n    return", "choices": [" a + b", " a - b"], "label": 0},
        {"prompt": "for i in range(10):\n   ", "choices": [" print(i)", " pass"], "label": 0}]
REPEATS = 4


def task_yaml(name: str, data: str, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\ndoc_to_text: '{{{{prompt}}}}'\n{body}")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (root / "tiny_ll.yaml").write_text(task_yaml("tiny_ll", data, (
        "output_type: multiple_choice\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n")))
    (root / "tiny_gen.yaml").write_text(task_yaml("tiny_gen", data, (
        f"output_type: generate_until\ndoc_to_target: '{{{{choices[0]}}}}'\nrepeats: {REPEATS}\n"
        "generation_kwargs:\n  until: ['\\n\\n']\n  max_gen_toks: 8\n  do_sample: true\n"
        "  temperature: 1.0\nmetric_list:\n  - metric: exact_match\n")))
    return TaskManager(include_path=str(root))


def evaluate(model, tasks, names, **kwargs):
    return simple_evaluate(model=model, tasks=names, task_manager=tasks, log_samples=True,
                                   **kwargs)["samples"]


def responses(samples, task):
    return [s["resps"] for s in sorted(samples[task], key=lambda s: s["doc_id"])]


def test_local_completions_through_the_server_and_the_in_process_lm(tiny_llama, tasks):
    sampler = Sampler.from_pretrained(str(tiny_llama), max_batch_size=16)
    with serving(sampler) as url:
        args = (f"model=tiny,base_url={url}/v1/completions,tokenizer={tiny_llama},"
                f"tokenizer_backend=huggingface,max_length={sampler.max_context},max_retries=1")
        served = evaluate("local-completions", tasks, ["tiny_ll", "tiny_gen"], model_args=args)
    local = evaluate(BudgetSamplerLM(sampler=sampler), tasks, ["tiny_ll", "tiny_gen"])
    # loglikelihood: echo + logprobs through the server = teacher forcing in-process
    for got, want in zip(responses(served, "tiny_ll"), responses(local, "tiny_ll")):
        assert [ll for (ll, _), in got] == pytest.approx([ll for (ll, _), in want], abs=1e-4)
        assert [greedy for (_, greedy), in got] == [greedy for (_, greedy), in want]
    # generate_until: every repeat is its own request with lm-eval's seed, so they are identical
    for [texts] in responses(served, "tiny_gen"):
        assert len(texts) == REPEATS and len(set(texts)) == 1
    # in-process, the repeats are one n-sample request: they differ
    for [texts] in responses(local, "tiny_gen"):
        assert len(texts) == REPEATS and len(set(texts)) > 1
