"""`budget-sampler bench`: runs bench/throughput.py of a source checkout with the given arguments."""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from ..errors import InvalidInput

HELP = "end-to-end throughput vs Hugging Face generate (bench/throughput.py)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for bench/throughput.py")


def main(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parents[3] / "bench" / "throughput.py"
    if not script.is_file():
        raise InvalidInput(f"{script} not found: `bench` runs from a source checkout of budget-sampler")
    sys.argv = [str(script), *args.bench_args]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")
    return 0
