"""`budget-sampler serve`: the engine behind an OpenAI-compatible API (budget_sampler/server/)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import math

from ..errors import InvalidInput
from ..server.protocol import Limits
from .common import add_model_arguments, load_sampler

HELP = "OpenAI-compatible completions and chat completions server"

logger = logging.getLogger("budget_sampler.server")


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
    parser.add_argument("--max-queued-requests", type=int, default=Limits.max_queued_requests,
                        help="prompts waiting with no sample decoding yet; a request past this gets 503 "
                             "with Retry-After (default: %(default)s)")
    parser.add_argument("--max-queued-samples", type=int, default=Limits.max_queued_samples,
                        help="samples waiting to start (or preempted); a request past this gets 503 "
                             "(default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                        help="cancel a request not finished this long after it arrived: 504, or an "
                             "error event ending its stream (default: no limit)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGTERM / SIGINT, how long requests in flight may still run before "
                             "they are cancelled with a 503 (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from ..server.app import build_app, load_chat_template
    from ..server.run import serve

    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"--port={args.port} is invalid: must be in [0, 65535]")
    for name in ("max_n", "max_tokens", "max_queued_requests", "max_queued_samples"):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: "
                               "must be >= 1")
    if args.request_timeout is not None and not 0 < args.request_timeout < math.inf:
        raise InvalidInput(f"--request-timeout={args.request_timeout:g} is invalid: must be a number of "
                           "seconds > 0")
    if not 0 <= args.shutdown_timeout < math.inf:
        raise InvalidInput(f"--shutdown-timeout={args.shutdown_timeout:g} is invalid: must be a number of "
                           "seconds >= 0")
    chat_template = None if args.chat_template is None else load_chat_template(args.chat_template)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sampler = load_sampler(args)
    limits = Limits(max_n=args.max_n, max_tokens=args.max_tokens, clip_max_tokens=args.clip_max_tokens,
                    max_queued_requests=args.max_queued_requests, max_queued_samples=args.max_queued_samples,
                    request_timeout=args.request_timeout)
    try:
        app = build_app(sampler, args.served_model_name or args.model, limits, access_log=args.access_log,
                        chat_template=chat_template)
        if not _is_loopback(args.host):
            logger.warning("binding to %s: anyone who can reach it can use this server (no auth)",
                           args.host)
        serve(app, args.host, args.port, args.shutdown_timeout)
    finally:
        sampler.close()  # the tensor-parallel ranks, if any
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
