"""The Pulumi components of lambdatrain's AWS deployment; ``__main__.py`` wires them together.

network.Network, storage.Storage, ledger.Ledger and functions.TrainingFunctions are one
ComponentResource each; iam.py holds the functions' roles and least-privilege policies, archive.py
what each function's zip holds, and config.py declares every stack setting once (``python -m
components.config`` prints their table). ``python -m components.plan dev|prod`` prints the resource
plan offline under Pulumi's mocks.
"""
