"""``python -m lambdatrain``: the same as the ``lambdatrain`` console script."""

from lambdatrain.cli.app import main

main()
