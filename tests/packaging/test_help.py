#!/usr/bin/env python3
"""Every long option keeld, keelctl, keel-bench and keel-gateway accept is described in --help.

The options a program accepts are read from its source: the getopt_long `struct option` tables
(keeld, keel-gateway, keel-bench), keelctl's `struct ctl_flag` tables, and the few options a
main() compares by hand (strcmp(arg, "--version")). The text is what the built program prints
for --help. Both ways are checked: an accepted option missing from the text, and a `--name` in
the text that the program does not accept (a renamed flag, or an extraction that found nothing).

  test_help.py SOURCE_DIR KEELD KEELCTL KEEL_BENCH KEEL_GATEWAY

A self-test first runs the comparison on texts with an option removed and one invented, so
this test fails if the comparison itself stops finding anything.
"""
import os
import re
import subprocess
import sys

GETOPT = re.compile(r'\{\s*"([a-z][a-z0-9-]*)"\s*,\s*(?:no_argument|required_argument|optional_argument)')
CTL_FLAG = re.compile(r'\{\s*"([a-z][a-z0-9-]*)"\s*,\s*(?:0|\'.\')\s*,\s*CTL_[A-Z0-9]+')
HAND = re.compile(r'strn?cmp\([^;]*?"--([a-z][a-z0-9-]*)"')
MENTION = re.compile(r'(?<![A-Za-z0-9-])--([a-z][a-z0-9-]*)')

PROGRAMS = {
    # program: (source files holding its option tables, table pattern)
    "keeld": (["server/config.c"], GETOPT),
    "keel-gateway": (["gateway/main.c"], GETOPT),
    "keel-bench": (["bench/keel_bench.c"], GETOPT),
    "keelctl": (["client/keelctl.c", "client/ctl_parse.c"], CTL_FLAG),
}

# Another program's flags that a help text names on purpose.
MENTIONS_ELSEWHERE = {
    "keel-bench": {"listen-metrics"},  # --metrics URL: keeld --listen-metrics
    "keelctl": {"listen-peer"},  # member update: the member restarts with --listen-peer there
}


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def accepted_options(source_dir, files, table):
    opts = set()
    for f in files:
        with open(os.path.join(source_dir, f), encoding="utf-8") as fh:
            src = strip_comments(fh.read())
        opts |= set(table.findall(src))
        opts |= set(HAND.findall(src))
    return opts


def compare(program, accepted, help_text):
    """The problems, as sentences; none when the text and the options agree."""
    mentioned = set(MENTION.findall(help_text))
    problems = []
    for o in sorted(accepted - mentioned):
        problems.append(f"{program} accepts --{o}, which its --help does not describe")
    for o in sorted(mentioned - accepted - MENTIONS_ELSEWHERE.get(program, set())):
        problems.append(f"{program} --help names --{o}, which {program} does not accept")
    if not accepted:
        problems.append(f"{program}: no options found in its source (did the table change form?)")
    return problems


def help_text(binary):
    r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60, check=False)
    return r.stdout.decode("utf-8", "replace")


def self_test():
    accepted = {"alpha", "beta-gamma", "beta"}
    text = "  --alpha X   one\n  --beta-gamma Y  two\n  --beta\n"
    assert compare("p", accepted, text) == [], compare("p", accepted, text)
    # --beta only as a prefix of --beta-gamma does not count as described.
    missing = compare("p", accepted, "  --alpha X\n  --beta-gamma Y\n")
    assert missing == ["p accepts --beta, which its --help does not describe"], missing
    invented = compare("p", accepted, text + "  --delta\n")
    assert invented == ["p --help names --delta, which p does not accept"], invented
    assert compare("p", set(), "") != []
    # The extractors on the table forms the programs use.
    src = ('{"name", required_argument, NULL, O_NAME},\n{"help", no_argument, NULL, \'h\'},\n'
           '{"peer-urls", 0, CTL_STR, &peer, false},   {"zone", 0, CTL_STR, &zone, false},\n'
           '{"write-out", \'w\', CTL_STR, &c->write_out, false},\n'
           'if (strcmp(argv[1], "--version") == 0)\n')
    assert set(GETOPT.findall(src)) == {"name", "help"}, GETOPT.findall(src)
    assert set(CTL_FLAG.findall(src)) == {"peer-urls", "zone", "write-out"}, CTL_FLAG.findall(src)
    assert set(HAND.findall(src)) == {"version"}, HAND.findall(src)


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    self_test()
    source_dir = argv[1]
    binaries = dict(zip(["keeld", "keelctl", "keel-bench", "keel-gateway"], argv[2:]))
    problems = []
    for program, (files, table) in PROGRAMS.items():
        accepted = accepted_options(source_dir, files, table)
        text = help_text(binaries[program])
        found = compare(program, accepted, text)
        print(f"{program}: {len(accepted)} options, {'ok' if not found else 'FAILED'}")
        problems += found
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
