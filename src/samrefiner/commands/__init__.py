"""CLI subcommands; importing this package registers every one of them on `samrefiner.cli.app`."""
