"""`budget-sampler <subcommand>`: one module per subcommand, each with HELP, add_arguments(parser)
and main(args). A user error (InvalidInput; also an output the OS refuses, as a full disk) becomes one
line on stderr and exit code 2, here only. SIGINT and SIGTERM unwind the command (budget_sampler/eval/signals.py)
and exit 130 and 143 (eval adds that rerunning it resumes), except `serve`, whose first signal is a
graceful shutdown (budget_sampler/server/run.py) that exits 0.

Adding a subcommand: write budget_sampler/cli/<name>.py and add its name to SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InvalidInput
from ..eval import signals

SUBCOMMANDS = ("generate", "eval", "evaluate", "serve", "export", "plan", "profile", "bench")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 too; keep its message to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="budget-sampler", description="Many-sample code generation with a "
                     "shared-prefix KV cache, and budget-matched evaluation of model ladders.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with signals.interruptible():
            return args.func(args)
    except InvalidInput as e:
        print(f"budget-sampler {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume" if args.command == "eval" else "interrupted",
              file=sys.stderr)
        return signals.exit_code()
