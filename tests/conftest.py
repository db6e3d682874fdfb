import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton: kernels run on CPU

import pytest  # noqa: E402

from checkpoints import make_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory):
    """A tiny checkpoint whose tokenizer has a chat template, and room for evalplus's prompts."""
    from checkpoints import CHAT_TEMPLATE
    return make_checkpoint(tmp_path_factory.mktemp("tiny-chat"), "llama", seed=1,
                           chat_template=CHAT_TEMPLATE, max_position_embeddings=1024)
