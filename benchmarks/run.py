"""Run every ``benchmarks/bench_*.py`` and write the results table (BENCHMARKS.md).

Each benchmark module defines ``run(report)`` and calls
``report(name, detcore_seconds, reference_seconds, reference_name, note="")`` once per row, timing detcore
and the reference (torchvision, detectron2's published figure, or a pure-PyTorch baseline) in the same
process on the same inputs. Speed-up = reference / detcore (> 1 means detcore is faster).

Usage: python benchmarks/run.py [--output BENCHMARKS.md] [--only SUBSTRING ...]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import platform
import sys
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MANUAL_MARKER = "<!-- rows below this line are kept by benchmarks/run.py -->"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default=None, help="markdown file to write (default: print only)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only modules whose name contains one of these"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    sys.path.insert(0, str(HERE))  # the bench modules import _timing
    sections: list[tuple[str, list[tuple]]] = []
    failures = []
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and not any(s in path.stem for s in args.only):
            continue
        rows: list[tuple] = []

        def report(name, detcore_seconds, reference_seconds, reference_name, note="", _rows=rows):
            _rows.append((name, float(detcore_seconds), float(reference_seconds), reference_name, note))
            ratio = reference_seconds / detcore_seconds if detcore_seconds > 0 else float("inf")
            print(
                f"  {name}: detcore {_fmt(detcore_seconds)}, {reference_name} {_fmt(reference_seconds)}, x{ratio:.2f}"
            )
            sys.stdout.flush()

        print(f"{path.stem}:", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            module.run(report)
        except Exception:
            failures.append(path.stem)
            traceback.print_exc()
        if rows:
            sections.append((path.stem.removeprefix("bench_"), rows))

    header = [
        "# detcore benchmarks",
        "",
        "Written by `nox -s bench` (benchmarks/run.py). Each row times detcore and a reference in the same process",
        "on the same inputs (alternating runs where the reference is run here); speed-up = reference time / detcore",
        "time (> 1: detcore is faster). Medians of repeats. Sections carry the date and machine they were measured on.",
        "",
    ]
    stamp = (
        f"_measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {_cpu_model()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, python {platform.python_version()}_"
    )
    rendered: dict[str, list[str]] = {}
    for title, rows in sections:
        body = [
            f"## {title}",
            "",
            stamp,
            "",
            "| benchmark | detcore | reference | reference time | speed-up | note |",
        ]
        body.append("|---|---|---|---|---|---|")
        for name, ours, ref, ref_name, note in rows:
            ratio = ref / ours if ours > 0 else float("inf")
            body.append(f"| {name} | {_fmt(ours)} | {ref_name} | {_fmt(ref)} | x{ratio:.2f} | {note} |")
        rendered[title] = [*body, ""]
    if args.output:
        out = Path(args.output)
        previous = out.read_text() if out.exists() else ""
        generated, _, kept = previous.partition(MANUAL_MARKER)
        # --only re-runs some modules: keep the other sections of the existing file as they were.
        old_sections: dict[str, list[str]] = {}
        current = None
        for line in generated.splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                old_sections[current] = []
            if current is not None:
                old_sections[current].append(line)
        merged = {**old_sections, **rendered} if args.only else rendered
        lines = header + [line for title in sorted(merged) for line in merged[title]]
        out.write_text("\n".join(lines).rstrip() + "\n\n" + MANUAL_MARKER + (kept or "\n"))
        print(f"wrote {out}")
    if failures:
        print(f"benchmarks that raised: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
