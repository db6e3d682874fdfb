"""`budget-sampler {generate,eval,serve,bench}`; user errors print one line and exit with code 2."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from .errors import InvalidInput


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 too; keep its message to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bench(args) -> int:
    script = Path(__file__).resolve().parent.parent / "bench" / "throughput.py"
    if not script.is_file():
        raise InvalidInput(f"{script} not found: `bench` runs from a source checkout of budget-sampler")
    sys.argv = [str(script), *args.bench_args]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import generate_cmd, serve
    from .eval import run as eval_run
    parser = _Parser(prog="budget-sampler", description=__doc__.split(";")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module, help_ in (("generate", generate_cmd, "sample n completions per prompt"),
                                ("eval", eval_run, "budget-matched evaluation of a model ladder"),
                                ("serve", serve, "OpenAI-compatible completions server")):
        p = sub.add_parser(name, help=help_, description=help_)
        module.add_arguments(p)
        p.set_defaults(func=module.main)
    p = sub.add_parser("bench", help="end-to-end throughput vs Hugging Face generate (bench/throughput.py)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for bench/throughput.py")
    p.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidInput as e:
        print(f"budget-sampler {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
