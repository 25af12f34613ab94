# SPDX-License-Identifier: LGPL-2.1-or-later
"""argparse types for the benchmarks' and experiments' command lines: a value the run cannot use (a
count of 0, a negative duration, a part that does not exist) is refused when the command line is
read, with argparse's usage message naming the option and the value, rather than found half-way
through a run that started PostgreSQL and a dozen daemons. No imports beyond argparse: the scripts
read their options before test/lib's fixtures are set up."""

import argparse


def at_least(lo, kind=int):
    """A number (int or float) of at least lo."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not v >= lo:     # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text!r} is below {lo}")
        return v
    parse.__name__ = kind.__name__
    return parse


def above(lo, kind=float):
    """A number (int or float) greater than lo."""
    def parse(text):
        v = at_least(lo, kind)(text)
        if v == lo:
            raise argparse.ArgumentTypeError(f"{text!r} is not above {lo}")
        return v
    parse.__name__ = kind.__name__
    return parse


def list_of(item, allowed=None):
    """A comma-separated list, not empty, of items parsed by item (a type like at_least(1)) or, with
    allowed, of words from allowed."""
    def parse(text):
        words = [w.strip() for w in text.split(",") if w.strip()]
        if not words:
            raise argparse.ArgumentTypeError(f"{text!r} is an empty list")
        if allowed is not None:
            bad = [w for w in words if w not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
            return words
        return [item(w) for w in words]
    parse.__name__ = "list"
    return parse
