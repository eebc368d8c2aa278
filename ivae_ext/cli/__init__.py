"""Command line: ``python -m ivae_ext train …`` and ``python -m ivae_ext reproduce ivae …``.

One module per model family (``ivae_ext.cli.ivae``, …) over shared pieces (``ivae_ext.cli.common``).
A family module exposes:

- ``NAME`` (str) and ``SUMMARY`` (str: what it trains, for the pointers in the help texts);
- ``TRAIN_MODELS`` (tuple of the ``--model`` values it serves);
- ``handles_train(model: str, data: str) -> bool``: whether it trains ``--model model`` on
  ``--data data`` (``data`` is ``"tcl"`` when ``--data`` is not given);
- ``add_train_arguments(parser)``: every ``train`` option but ``--model`` and ``--out``, which
  this module adds (``--model`` with the union of all families' TRAIN_MODELS as choices);
- ``run_train(args) -> int``: the ``train`` handler (exit status);
- ``REPRODUCE_EXPERIMENTS`` (tuple of ``reproduce`` experiment names, may be empty),
  ``add_reproduce_arguments(parser)`` (every option but the experiment and ``--out``) and
  ``run_reproduce(args) -> int``;
- help texts: ``MODEL_HELP`` (its part of the help of ``--model``), ``TRAIN_HELP`` and
  ``TRAIN_DESCRIPTION`` (the ``train`` subcommand's help and description when it is the family
  shown), ``TRAIN_HELP_HINT`` (how to get its ``train --help``, e.g. ``"--model ivae --help"``),
  ``REPRODUCE_HELP`` and ``REPRODUCE_DESCRIPTION`` (likewise for ``reproduce``).

Dispatch is two-stage: a pre-parse of ``--model`` and ``--data`` (for ``train``) or of the
experiment name (for ``reproduce``) picks the family, the first in FAMILIES that claims it; only
that family's options are then added to the parser. A family is registered by putting its module
in FAMILIES; earlier families win, so a family that claims some of another's (model, data)
combinations goes before it.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from ivae_ext import distributed

from ivae_ext.cli import decomp as decomp_family
from ivae_ext.cli import ima as ima_family
from ivae_ext.cli import ivae as ivae_family
from ivae_ext.cli import lidvae as lidvae_family
from ivae_ext.cli.common import RAW, Formatter, add_out_argument

FAMILIES = [lidvae_family, ivae_family, ima_family, decomp_family]  # lidvae first: it claims `vae` on image data
DEFAULT_FAMILY = ivae_family  # whose options `train --help` and `reproduce --help` show when nothing selects one
DEFAULT_MODEL = "ivae"
DEFAULT_DATA = "tcl"

__all__ = ["FAMILIES", "Formatter", "RAW", "build_parser", "main", "reproduce_family", "train_family"]


def _union(attr: str) -> tuple:
    names = []
    for family in FAMILIES:
        names.extend(n for n in getattr(family, attr) if n not in names)
    return tuple(names)


def train_models() -> tuple:
    """Every ``--model`` value of ``train`` (the union of the families' TRAIN_MODELS)."""
    return _union("TRAIN_MODELS")


def reproduce_experiments() -> tuple:
    """Every experiment of ``reproduce`` (the union of the families' REPRODUCE_EXPERIMENTS)."""
    return _union("REPRODUCE_EXPERIMENTS")


def train_family(model: str, data: str):
    """The first family in FAMILIES that trains `model` on `data`, or None."""
    for family in FAMILIES:
        if model in family.TRAIN_MODELS and family.handles_train(model, data):
            return family
    return None


def reproduce_family(experiment: str):
    """The first family in FAMILIES that reproduces `experiment`, or None."""
    for family in FAMILIES:
        if experiment in family.REPRODUCE_EXPERIMENTS:
            return family
    return None


def _default_reproduce_family():
    if DEFAULT_FAMILY.REPRODUCE_EXPERIMENTS:
        return DEFAULT_FAMILY
    return next(f for f in FAMILIES if f.REPRODUCE_EXPERIMENTS)


def _split_command(argv: list) -> tuple:
    """(command, the arguments after it); the top-level parser takes no option with a value."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return arg, argv[i + 1:]
    return None, []


def _preparse_train(rest: list) -> tuple:
    """(model, data) as the command line gives them, with the defaults when absent."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--model", default=DEFAULT_MODEL)
    pre.add_argument("--data", default=DEFAULT_DATA)
    try:
        known, _ = pre.parse_known_args(rest)
    except (argparse.ArgumentError, SystemExit):  # e.g. --model without a value: the full parser says so
        return DEFAULT_MODEL, DEFAULT_DATA
    return known.model, known.data


def _preparse_reproduce(rest: list):
    """The experiment named on the command line (the first argument that names one), or None."""
    experiments = reproduce_experiments()
    return next((arg for arg in rest if arg in experiments), None)


def _unhandled_train_message(model: str, data: str) -> str:
    serving = [f for f in FAMILIES if model in f.TRAIN_MODELS]
    return (f"no model family trains --model {model} on --data {data!r}; --model {model} is served by "
            + "; ".join(f"{f.NAME} ({f.SUMMARY})" for f in serving))


def _train_description(shown) -> str:
    others = [f for f in FAMILIES if f is not shown]
    if not others:
        return shown.TRAIN_DESCRIPTION
    lines = [f"  train {f.TRAIN_HELP_HINT}: the options of {f.SUMMARY}" for f in others]
    return shown.TRAIN_DESCRIPTION + "\n\nThe options below are those of " + shown.SUMMARY + ". Other model " \
        "families:\n" + "\n".join(lines)


def _reproduce_description(shown) -> str:
    others = [f for f in FAMILIES if f is not shown and f.REPRODUCE_EXPERIMENTS]
    if not others:
        return shown.REPRODUCE_DESCRIPTION
    lines = [f"  reproduce {e} --help: the options of {f.SUMMARY}" for f in others for e in f.REPRODUCE_EXPERIMENTS]
    return shown.REPRODUCE_DESCRIPTION + "\n\nThe options below are those of " + \
        "/".join(shown.REPRODUCE_EXPERIMENTS) + ". Other experiments:\n" + "\n".join(lines)


def _model_help() -> str:
    if len(FAMILIES) == 1:
        return FAMILIES[0].MODEL_HELP
    return "; ".join(f"{'/'.join(f.TRAIN_MODELS)}: {f.MODEL_HELP}" for f in FAMILIES)


def _select(argv) -> tuple:
    """(train family, reproduce family) whose options the parser for `argv` carries."""
    train_fam, reproduce_fam = DEFAULT_FAMILY, _default_reproduce_family()
    if argv is None:
        return train_fam, reproduce_fam
    command, rest = _split_command(list(argv))
    if command == "train":
        train_fam = train_family(*_preparse_train(rest)) or DEFAULT_FAMILY
    elif command == "reproduce":
        experiment = _preparse_reproduce(rest)
        reproduce_fam = (reproduce_family(experiment) if experiment else None) or reproduce_fam
    return train_fam, reproduce_fam


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser for `argv` (the arguments after the program name): ``train`` carries the options of
    the family that its --model and --data select, ``reproduce`` those of its experiment's family.
    Without `argv` (or when nothing selects a family), DEFAULT_FAMILY's options."""
    train_fam, reproduce_fam = _select(argv)
    parser = argparse.ArgumentParser(
        prog="ivae-ext", formatter_class=Formatter,
        description="Identifiable VAEs on fused torch ops: train a model, or reproduce a paper's claim.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", formatter_class=Formatter, help=train_fam.TRAIN_HELP,
                           description=_train_description(train_fam))
    train.add_argument("--model", choices=train_models(), default=DEFAULT_MODEL, help=_model_help())
    train.add_argument("--distributed", action="store_true",
                       help="train data-parallel in the process group torchrun starts (torchrun --nproc_per_node=N "
                            "-m ivae_ext train …; detected without this flag too, which makes its absence an error)")
    add_out_argument(train)
    train_fam.add_train_arguments(train)
    train.set_defaults(_family=train_fam)

    rep = sub.add_parser("reproduce", formatter_class=Formatter, help=reproduce_fam.REPRODUCE_HELP,
                         description=_reproduce_description(reproduce_fam))
    rep.add_argument("experiment", choices=reproduce_experiments(), help="which claim to reproduce")
    add_out_argument(rep)
    reproduce_fam.add_reproduce_arguments(rep)
    rep.set_defaults(_family=reproduce_fam)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    command, rest = _split_command(argv)
    if command == "train":  # an unknown (model, data) pair: say so before the options of another family
        model, data = _preparse_train(rest)
        if model in train_models() and train_family(model, data) is None:
            _subparser(parser, "train").error(_unhandled_train_message(model, data))
    args = parser.parse_args(argv)
    family = args._family
    if args.command == "train":
        chosen = train_family(args.model, args.data)
        if chosen is None:
            _subparser(parser, "train").error(_unhandled_train_message(args.model, args.data))
        if chosen is not family:
            _subparser(parser, "train").error(
                f"could not tell the model family from the command line (--model {args.model}, "
                f"--data {args.data!r}): spell out --model and --data in full")
        return _run_train(family, args)
    if distributed.env_world_size() > 1:
        parser.error("reproduce runs its settings in processes of its own (--jobs); start it with python, not torchrun")
    return family.run_reproduce(args)


def _run_train(family, args) -> int:
    """Run the family's train handler; under torchrun, in the process group, with output from rank 0
    only, ending the process through distributed.finish (see there why)."""
    ctx = distributed.setup("cpu", required=args.distributed)  # the command line trains on the CPU
    if not ctx.active:
        return family.run_train(args)
    if ctx.rank != 0:
        sys.stdout = open(os.devnull, "w")  # one rank reports; errors still reach stderr
    status = 1
    try:
        status = family.run_train(args)
    except BaseException:  # noqa: BLE001 - report, then exit non-zero without interpreter finalisation
        traceback.print_exc()
    distributed.finish(status)


if __name__ == "__main__":
    sys.exit(main())
