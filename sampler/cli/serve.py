"""`budget-sampler serve`: the engine behind an OpenAI-compatible API (sampler/server/)."""
from __future__ import annotations

import argparse
import ipaddress
import logging

from ..errors import InvalidInput
from ..server.protocol import Limits
from .common import add_model_arguments, load_sampler

HELP = "OpenAI-compatible completions and chat completions server"

logger = logging.getLogger("sampler.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default loopback; the API has no authentication)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-n", type=int, default=Limits.max_n,
                        help="largest n a request may ask for")
    parser.add_argument("--max-tokens", type=int, default=Limits.max_tokens,
                        help="largest max_tokens a request may ask for")
    parser.add_argument("--clip-max-tokens", action="store_true",
                        help="lower a request's max_tokens to what the model's context leaves after "
                             "its prompt, instead of answering 400 (evalplus always asks for 768)")
    parser.add_argument("--served-model-name", default=None,
                        help="the model id clients send and /v1/models lists (default: --model)")
    parser.add_argument("--chat-template", default=None, metavar="FILE",
                        help="a Jinja chat template file that replaces the tokenizer's (for models "
                             "that ship none)")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per HTTP request (off by default)")


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from ..server.app import build_app, load_chat_template

    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"--port={args.port} is invalid: must be in [0, 65535]")
    for name in ("max_n", "max_tokens"):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: "
                               "must be >= 1")
    chat_template = None if args.chat_template is None else load_chat_template(args.chat_template)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sampler = load_sampler(args)
    limits = Limits(max_n=args.max_n, max_tokens=args.max_tokens, clip_max_tokens=args.clip_max_tokens)
    app = build_app(sampler, args.served_model_name or args.model, limits, access_log=args.access_log,
                    chat_template=chat_template)
    if not _is_loopback(args.host):
        logger.warning("binding to %s: anyone who can reach it can use this server (no auth)",
                       args.host)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
