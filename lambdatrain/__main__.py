"""``python -m lambdatrain``: the same as the ``lambdatrain`` console script."""

from lambdatrain.cli import main

main()
