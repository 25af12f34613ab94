#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The man pages (man/, built by make-man.py with lowdown): each is built, `man` renders it without
a troff error, it has its NAME and its sections, and the page of each program names every option the
program's --help lists, so that the pages cannot fall behind the programs."""

import os
import re

import mctest
from mctest import check, run

MAN_DIR = os.path.join(mctest.build_dir(), "man")
PAGES = {
    # page: (the program whose options it must name, or None)
    "mcctl.1": "src/mcctl/mcctl",
    "mc-dhtget.1": "src/dht/mc-dhtget",
    "mc-certs.1": None,
    "mc.conf.5": None,
    "mc-api.7": None,
    "mc-control.8": "src/control/mc-control",
    "mc-agent.8": "src/agent/mc-agent",
    "mc-seeder.8": "src/seeder/mc-seeder",
    "mc-fence-keeper.8": None,
    "mc-fence-init.8": None,
    "mc-exec-supervisor.8": None,
}


def render(page, width=80):
    p = run(["man", "--warnings", "-l", os.path.join(MAN_DIR, page)], env={"MANWIDTH": str(width), "MANPAGER": "cat"})
    # groff says "cannot adjust line" where a table cell holds a long word: layout, not an error.
    errors = [ln for ln in p.stderr.splitlines() if ln.strip() and "cannot adjust line" not in ln]
    check(not errors, f"{page}: troff says:\n" + "\n".join(errors))
    return p.stdout


def test_every_page_is_built_and_renders():
    built = sorted(f for f in os.listdir(MAN_DIR) if re.match(r".*\.[1-8]$", f))
    check(built == sorted(PAGES), f"pages built {built}, expected {sorted(PAGES)}")
    for page in PAGES:
        text = render(page)
        name = page.rsplit(".", 1)[0]
        check(re.search(rf"^NAME\n\s+{re.escape(name)}\s+-\s+\S", text, re.M), f"{page}: no NAME line for {name}")
        check(re.search(r"^(DESCRIPTION|SYNOPSIS)$", text, re.M), f"{page}: no DESCRIPTION")


def test_program_pages_name_every_option():
    for page, program in PAGES.items():
        if not program:
            continue
        text = render(page, width=1000)         # no line breaks inside an option's name
        helptext = run([os.path.join(mctest.build_dir(), program), "--help"]).stdout
        options = set(re.findall(r"^  (?:-\w )?\s*(--[a-z0-9-]+)", helptext, re.M)) - {"--help", "--version", "--config"}
        check(options, f"{program} --help lists no options")
        for o in sorted(options):
            check(o in text, f"{page} does not describe {o}")


def test_api_page_has_the_api_sections():
    text = render("mc-api.7")
    with open(os.path.join(mctest.source_dir(), "docs", "api.md")) as f:
        sections = re.findall(r"^## (.+)$", f.read(), re.M)
    check(len(sections) >= 5, sections)
    for s in sections:
        check(re.search(rf"^{re.escape(s.upper())}$", text, re.M) or s in text, f"mc-api.7 has no section {s!r}")


mctest.main()
