"""`python -m samrefiner` runs the command-line tool."""

from samrefiner.cli import main

main()
