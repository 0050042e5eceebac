"""The ``ishcount`` command.

Subcommands are registered in :func:`build_parser`; each has a handler
``_run_<name>(args) -> int``. ``run`` analyses folders of images and writes a
report per case; ``classify`` classifies counts made by hand at the
microscope; ``rules`` lists the rule sets; ``synth`` writes synthetic cases.

Exit codes: 0 when everything asked for was done (for ``classify``: a result
was printed, whatever the call); 1 when ``run`` finished but at least one image
failed (the rest of the batch and every case report were still written);
2 for invalid arguments, values or inputs (the message names them).

Examples
--------
>>> main(["classify", "--her2", "92", "--cep17", "40", "--nuclei", "20", "--json"])
... # doctest: +ELLIPSIS
{...}
0
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ishcount import RESEARCH_USE_NOTICE, __version__
from ishcount.rules import DEFAULT_RULE_SET, RULE_SETS, Classification, Counts, classify

EXIT_OK = 0
EXIT_FAILED_IMAGES = 1
EXIT_USAGE = 2

_EPILOG = (
    "exit codes: 0 = done (for classify: a result was printed, any call); "
    "1 = run finished but some images failed (see each case.json); "
    "2 = invalid arguments, values or inputs. " + RESEARCH_USE_NOTICE
)


def _add_classify(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify HER2/CEP17 counts made by hand",
        description="Classify HER2/CEP17 signal counts counted at the microscope, e.g. "
        "'ishcount classify --her2 92 --cep17 40 --nuclei 20 --ihc 2+'.",
        epilog=_EPILOG,
    )
    parser.add_argument("--her2", type=float, required=True, help="total HER2 signals")
    parser.add_argument("--cep17", type=float, help="total CEP17 signals (dual-probe rule sets)")
    parser.add_argument("--nuclei", type=int, required=True, help="number of nuclei counted")
    parser.add_argument("--fields", type=int, help="separate tumour areas counted (optional)")
    parser.add_argument("--ihc", help="concurrent IHC score: 0, 1+, 2+ or 3+")
    parser.add_argument("--rule-set", default=DEFAULT_RULE_SET, help="see 'ishcount rules'")
    recount = parser.add_argument_group("blinded recount (all three or none)")
    recount.add_argument("--recount-her2", type=float, help="recount: total HER2 signals")
    recount.add_argument("--recount-cep17", type=float, help="recount: total CEP17 signals")
    recount.add_argument("--recount-nuclei", type=int, help="recount: nuclei counted")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"classification": ..., "notice": ...} as JSON; the classification '
        "object loads with ishcount.rules.Classification.from_dict",
    )
    parser.set_defaults(handler=_run_classify)


def _add_rules(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rules", help="list the rule sets", description="List the rule sets.", epilog=_EPILOG
    )
    parser.set_defaults(handler=_run_rules)


def _add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="analyse folders of images: one folder = one case, a folder of folders = a batch",
        description="Segment nuclei, detect and count HER2/CEP17 signals in every image, pool "
        "each case's fields, classify it and write cells.csv, spots.csv, case.json, label images "
        "and report.html per case plus summary.csv. Masks beside a field and named after it "
        "are used with it: <field>.nuclei.tif/.png/.npy/.geojson (or Cellpose's "
        "<field>_cp_masks.png or <field>_seg.npy) as its nuclei, <field>.roi.tif/.png/.geojson "
        "as the region to score. A rerun skips "
        "images whose results exist for the same input files (masks included) and parameters.",
        epilog=_EPILOG,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", required=True, help="output folder (not inside an input)")
    parser.add_argument(
        "--pipeline", default=None, help="pipeline name or YAML file (default breast-dual-probe)"
    )
    parser.add_argument("--ihc", help="concurrent IHC score for every case: 0, 1+, 2+ or 3+")
    parser.add_argument(
        "--ihc-table",
        metavar="CSV",
        help="IHC score per case: a CSV with 'case' and 'ihc' columns (overrides --ihc)",
    )
    parser.add_argument(
        "--channels",
        help="channel indices when the files do not name them, e.g. dapi=0,her2=1,cep17=2",
    )
    parser.add_argument(
        "--pixel-size-um", help="pixel size when the files do not give it: X, or Y,X or Z,Y,X"
    )
    parser.add_argument(
        "--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786"
    )
    parser.add_argument("--workers", type=int, help="local worker processes (default: CPUs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cases and fields (files, scenes, masks, IHC) that would be analysed, "
        "and stop",
    )
    parser.set_defaults(handler=_run_run)


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic case with exact ground truth",
        description="Write a synthetic HER2/CEP17 FISH case; arguments as for "
        "'python -m ishcount.synthetic' (see 'ishcount synth --help').",
        add_help=False,
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="see 'ishcount synth --help'")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``ishcount`` argument parser with one subparser per command.

    Examples
    --------
    >>> build_parser().parse_args(["rules"]).command
    'rules'
    """
    parser = argparse.ArgumentParser(
        prog="ishcount",
        description="HER2/CEP17 dual-probe FISH analysis and classification.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"ishcount {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_run(subparsers)
    _add_classify(subparsers)
    _add_rules(subparsers)
    _add_synth(subparsers)
    return parser


def _recount_from(args: argparse.Namespace) -> Counts | None:
    given = [args.recount_her2, args.recount_cep17, args.recount_nuclei]
    if all(v is None for v in given):
        return None
    if args.recount_her2 is None or args.recount_nuclei is None:
        raise ValueError(
            "--recount-her2 and --recount-nuclei must be given together, got "
            f"--recount-her2={args.recount_her2} --recount-nuclei={args.recount_nuclei}"
        )
    return Counts(args.recount_nuclei, args.recount_her2, args.recount_cep17)


def format_classification(result: Classification) -> str:
    """Return a human-readable block for one classification.

    Examples
    --------
    >>> text = format_classification(classify(Counts(20, 92, 40, 2)))
    >>> text.splitlines()[1]
    'Call:       positive (group 1)'
    """
    band = f"group {result.group}" if result.group is not None else result.band or "undefined"
    lines = [
        f"Rule set:   {result.rule_set} (version {result.rule_set_version})",
        f"Call:       {result.call} ({band})",
    ]
    values = [f"mean HER2 {_two(result.mean_her2)}"]
    if result.counts.total_cep17 is not None:
        values += [f"mean CEP17 {_two(result.mean_cep17)}", f"ratio {_two(result.ratio)}"]
    lines.append(f"Values:     {', '.join(values)} ({result.counts.n_nuclei} nuclei)")
    if result.ihc is not None:
        lines.append(f"IHC:        {result.ihc}")
    sections = [
        ("Comment", [result.comment] if result.comment else []),
        ("Work-up", result.workup),
        ("Recommend", result.recommendations),
        ("Annotation", result.annotations),
        ("Reasons", result.reasons),
    ]
    for title, items in sections:
        for item in items:
            lines.append(f"{title + ':' if title else '':<11} {item}")
            title = ""
    lines.append(RESEARCH_USE_NOTICE)
    return "\n".join(lines)


def _two(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _run_classify(args: argparse.Namespace) -> int:
    counts = Counts(args.nuclei, args.her2, args.cep17, n_fields=args.fields)
    result = classify(counts, rule_set=args.rule_set, ihc=args.ihc, recount=_recount_from(args))
    if args.json:
        payload = {"classification": result.to_dict(), "notice": RESEARCH_USE_NOTICE}
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(format_classification(result))
    return EXIT_OK


def _run_rules(args: argparse.Namespace) -> int:
    for rules in RULE_SETS.values():
        default = "  [default]" if rules.name == DEFAULT_RULE_SET else ""
        print(f"{rules.describe()}{default}")
    return EXIT_OK


def _run_run(args: argparse.Namespace) -> int:
    from ishcount.config import load_pipeline
    from ishcount.io import parse_channels, parse_spacing_um
    from ishcount.pipeline import (
        RunOptions,
        check_output_folder,
        discover_cases,
        read_ihc_table,
        run_batch,
    )
    from ishcount.rules import parse_ihc

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    config = load_pipeline(args.pipeline)
    options = RunOptions(
        channels=parse_channels(args.channels) if args.channels else None,
        spacing_um=parse_spacing_um(args.pixel_size_um) if args.pixel_size_um else None,
        ihc=parse_ihc(args.ihc),
        ihc_by_case=read_ihc_table(args.ihc_table) if args.ihc_table else None,
        seed=args.seed,
    )
    cases = discover_cases(args.inputs, config=config)
    if args.dry_run:
        check_output_folder(Path(args.out), cases)
        print(format_cases(cases, options))
        return EXIT_OK
    progress = _Progress(sum(len(case.sources) for case in cases))
    outcomes = run_batch(
        args.inputs,
        args.out,
        config=config,
        options=options,
        scheduler=args.scheduler,
        workers=args.workers,
        on_field=progress.update,
    )
    progress.close()
    for outcome in outcomes:
        print(outcome.one_line)
    failed = sum(len(o.failed_fields) for o in outcomes)
    print(f"Results in {args.out} (summary.csv, <case>/report.html). {RESEARCH_USE_NOTICE}")
    if failed:
        print(
            f"{failed} image(s) failed; the reason for each is in its case.json.", file=sys.stderr
        )
        return EXIT_FAILED_IMAGES
    return EXIT_OK


def format_cases(cases: Sequence[Any], options: Any) -> str:
    """What ``ishcount run --dry-run`` prints: each case with its IHC score and fields.

    Parameters
    ----------
    cases : sequence of ishcount.pipeline.Case
        From :func:`ishcount.pipeline.discover_cases`.
    options : ishcount.pipeline.RunOptions
        For each case's IHC score.

    Returns
    -------
    str
        One line per case, one indented line per field (its files, scene and masks), and
        a closing count.
    """
    lines = []
    for case in cases:
        ihc = options.ihc_of(case.name)
        lines.append(f"{case.name}: {len(case.sources)} field(s), IHC {ihc or 'not given'}")
        for source in case.sources:
            files = ", ".join(path.name for path in source.paths)
            scene = "" if source.scene is None else f" (scene {source.scene + 1})"
            masks = "".join(f"; {kind}: {path.name}" for kind, path in source.masks)
            missing = "".join(f"; no {channel} file" for channel in source.missing_channels)
            lines.append(f"  {source.name}: {files}{scene}{masks}{missing}")
    n_fields = sum(len(case.sources) for case in cases)
    lines.append(f"{len(cases)} case(s), {n_fields} field(s); nothing was analysed (--dry-run).")
    return "\n".join(lines)


class _Progress:
    """A one-line progress bar on stderr (a line per image when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.tty = sys.stderr.isatty()

    def update(self, record: object) -> None:
        self.done += 1
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        status = getattr(record, "status", "")
        name = f"{getattr(record, 'case', '')}/{getattr(record, 'name', '')}"
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {name} {status}"
        if status == "failed":
            line += f": {getattr(record, 'error', '')}"
        print(
            ("\r" + line + " " * 10) if self.tty else line,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _run_synth(args: argparse.Namespace) -> int:
    from ishcount.synthetic import main as synth_main

    return synth_main(args.args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ishcount`` command and return its exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        0 when a result was printed, 2 for invalid arguments or values.

    Examples
    --------
    >>> main(["rules"])  # doctest: +ELLIPSIS
    asco-cap-2018-breast-dual (version 2018.1): ...
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synth"]:  # its own parser: argparse's REMAINDER drops leading options
        return _run_synth(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help, --version and usage errors
        return int(exit_.code or 0)
    try:
        return args.handler(args)
    except (ValueError, TypeError) as err:
        print(f"ishcount {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
