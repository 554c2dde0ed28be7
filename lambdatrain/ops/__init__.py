"""The operator's side of lambdatrain: find the stack (AWS or local), read a run, act on it.

``target`` resolves where the stack is and wraps every AWS call in one error mapping; ``source``
reads a run from the ledger table or from a ``local train --out`` folder; ``views`` renders status
and runs; ``progress`` follows a run to its end (``watch`` and ``local_train``, which runs one on
the local stack); ``control`` starts, stops and resumes through the starter; ``plot`` and ``export``
turn a run's metrics and weights into files. ``lambdatrain.cli.ops`` is the command line over them.
"""
