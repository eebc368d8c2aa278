"""Pieces every CLI family module shares: the help formatter and the common arguments."""

from __future__ import annotations

import argparse

RAW = argparse.RawDescriptionHelpFormatter


class Formatter(argparse.ArgumentDefaultsHelpFormatter, RAW):
    """Shows defaults, except for on/off flags, whose help says what the default is."""

    def _get_help_string(self, action):
        if action.nargs == 0:  # store_true / store_false / help: "(default: True)" would mislead
            return action.help
        return super()._get_help_string(action)


def add_out_argument(p: argparse.ArgumentParser) -> None:
    """--out, which every command of every family takes."""
    p.add_argument("--out", required=True, help="output directory")
