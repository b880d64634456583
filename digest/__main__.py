"""`python -m digest`: the same as the `digest` command."""

from .cli import main

main(prog_name="digest")
