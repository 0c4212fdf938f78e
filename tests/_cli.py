"""Run the xaudit CLI in-process (the console script's ``main``) and capture its output."""
from __future__ import annotations


def run_main(argv, capsys):
    """-> (exit code, stdout, stderr) of ``xaudit ARGV``."""
    from xaudit.cli import main
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err
