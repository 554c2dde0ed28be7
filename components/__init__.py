"""The Pulumi components of lambdatrain's AWS deployment; ``__main__.py`` wires them together.

network.Network, storage.Storage, ledger.Ledger and functions.TrainingFunctions, each one
ComponentResource (iam.py holds the functions' roles and least-privilege policies); config.StackSettings holds the validated stack configuration; ``python -m
components.plan dev|prod`` prints the resource plan offline under Pulumi's mocks.
"""
