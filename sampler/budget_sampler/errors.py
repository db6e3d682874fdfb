"""The one exception type for bad user input, so the CLI can print it as one line and exit 2."""


class InvalidInput(ValueError):
    """Raised for input the user can fix: the message names the bad value and what is allowed."""


class ContextOverflow(InvalidInput):
    """A prompt and the tokens after it do not fit the model's context. It carries the counts, so a
    caller can name its own field to lower (the server's max_tokens, lm-eval's max_gen_toks)."""

    def __init__(self, prompt_tokens: int, new_tokens: int, max_context: int, field: str = "max_new_tokens"):
        super().__init__(f"prompt ({prompt_tokens} tokens) + {field} ({new_tokens}) exceeds the model's "
                         f"context of {max_context} tokens")
        self.prompt_tokens, self.new_tokens, self.max_context = prompt_tokens, new_tokens, max_context

    @property
    def room(self) -> int:
        """The most new tokens this prompt leaves (< 1: the prompt alone fills the context)."""
        return self.max_context - self.prompt_tokens


def check_context(prompt_tokens: int, new_tokens: int, max_context: int, field: str = "max_new_tokens") -> None:
    """The one check that a prompt + new tokens fit the context (Engine.validate, scoring, eval's plan)."""
    if prompt_tokens + new_tokens > max_context:
        raise ContextOverflow(prompt_tokens, new_tokens, max_context, field)
