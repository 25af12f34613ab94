#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds a man page from its markdown source with lowdown. Where the source has a line @OPTIONS@, the
options the program's --help lists are put in, and @COMMANDS@ takes each command's --help (mcctl):
the page cannot drift from the program.

Usage: make-man.py SOURCE.md NAME SECTION OUTPUT [PROGRAM]"""

import os
import re
import subprocess
import sys

OPTION = re.compile(r"^  (?:-(\w) )?\s*--([a-z0-9-]+)(?:=(\S+))?\s+(.*?)(?: \[(.*)\])?(?: \((\$MC_\w+)(?:, \$(\w+))?\))?$")


def help_of(program, *args):
    env = dict(os.environ, HOME="~", ASAN_OPTIONS="detect_leaks=0", MC_LOG_TARGET="console")
    env.pop("XDG_CONFIG_HOME", None)
    p = subprocess.run([program, *args, "--help"], capture_output=True, text=True, env=env, timeout=60)
    if p.returncode != 0:
        sys.exit(f"{program} {' '.join(args)} --help failed ({p.returncode}): {p.stderr}")
    return p.stdout


def md_escape(s):
    return re.sub(r"([\\`*_\[\]<>])", r"\\\1", s)


def options_md(program):
    out = []
    for line in help_of(program).splitlines():
        m = OPTION.match(line)
        if not m:
            continue
        short, name, value, text, default, env, alias = m.groups()
        if name in ("help", "version", "config"):
            continue
        head = (f"**-{short}**, " if short else "") + f"**--{name}**" + (f"=*{md_escape(value)}*" if value else "")
        key = name.upper().replace("-", "_")
        where = f"`{key}=` in the file, `{env}` in the environment" if env else ""
        if alias:
            where += f" (also `{alias}`)"
        body = md_escape(text) + ("" if text.endswith(".") else ".")
        if default not in (None, ""):
            body += f" Default: `{default}`."
        out.append(f"{head}\n\n:   {body}" + (f" ({where})" if where else "") + "\n")
    if not out:
        sys.exit(f"{program} --help lists no options")
    return "\n".join(out)


def commands_md(program):
    out = []
    text = help_of(program)
    for name in re.findall(r"^  ([a-z]+) ", text.split("Commands:", 1)[1], re.M):
        lines = help_of(program, name).splitlines()
        out.append(f"**{md_escape(lines[0])}**\n")
        body = [ln for ln in lines[2:]]
        prose = [ln for ln in body if not ln.startswith("  ")]
        opts = [ln.strip() for ln in body if ln.startswith("  ")]
        out.append(":   " + md_escape(" ".join(prose)) + "\n")
        for o in opts:
            out.append(f"    - `{o.split('  ')[0].strip()}`: {md_escape(o.split('  ', 1)[1].strip() if '  ' in o else '')}")
        out.append("")
    return "\n".join(out)


def main():
    source, name, section, output = sys.argv[1:5]
    program = sys.argv[5] if len(sys.argv) > 5 else None
    with open(source, encoding="utf-8") as f:
        text = f.read()
    if not source.endswith(".md") or os.path.basename(source).count(".") == 1:
        # A document of docs/ (the API): its title becomes NAME, its sections the page's.
        title, rest = text.split("\n", 1)
        text = (f"# NAME\n\n{name} - {title.lstrip('# ').strip()}\n\n# DESCRIPTION\n\n"
                + re.sub(r"^### ", "## ", re.sub(r"^## ", "# ", rest, flags=re.M), flags=re.M))
    if "@OPTIONS@" in text:
        text = text.replace("@OPTIONS@", options_md(program))
    if "@COMMANDS@" in text:
        text = text.replace("@COMMANDS@", commands_md(program))
    p = subprocess.run(["lowdown", "-s", "-Tman", "--out-no-smarty", "-M", f"title={name}", "-M", f"section={section}",
                        "-M", "source=mc", "-M", "volume=mc manual"],
                       input=text, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"lowdown failed on {source}: {p.stderr}")
    with open(output, "w", encoding="utf-8") as f:
        f.write(p.stdout)


main()
