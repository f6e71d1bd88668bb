"""`python -m streams.cli`: the same program as the pushcascade console script."""

from streams.cli import main

main()
