"""Review refined datasets: a static page to look through and overrule refinements.

`build_report` writes the page from `ReviewImage` records (`samrefiner review` makes them from a
dataset and its refined output); `apply_decisions` turns the page's exported decisions into the
final dataset (`samrefiner apply-review`).
"""
