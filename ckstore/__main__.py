"""`python -m ckstore`: the same as the `ckstore` command."""

from .cli import main

main()
