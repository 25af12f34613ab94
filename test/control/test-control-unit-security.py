#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""units/mc-control.service's sandbox, as `systemd-analyze security` scores it from the unit file
alone (--offline: the same on every machine): its exposure stays at or below the bound, so that no
loosening goes unnoticed. test-control-systemd runs the unit with that sandbox in a real manager."""

import os

import mctest
from mctest import check

UNIT = "mc-control.service"
# On systemd-analyze's 0-100 scale: 12 is the "1.2" it prints.
EXPOSURE_MAX = 12


def test_unit_security_exposure():
    path = os.path.join(mctest.build_dir(), "units", "test", UNIT)
    p = mctest.run(["systemd-analyze", "security", "--offline=yes", f"--threshold={EXPOSURE_MAX}", "--no-pager", path],
                   check=False)
    overall = [line for line in p.stdout.splitlines() if "Overall exposure" in line]
    check(p.returncode == 0, f"{UNIT}: exposure above {EXPOSURE_MAX / 10}: {overall} {p.stderr}")


mctest.main()
