"""The local stack: AWS on one machine, running the very same handler code.

- ``moto`` serves DynamoDB (with streams) and S3 on 127.0.0.1 (``stack.py``);
- ``service.py`` speaks the Lambda Invoke API and runs each function in warm, killable processes
  (``sandbox.py`` is what runs inside them);
- ``poller.py`` reads the table's stream and delivers filtered batches to the combiner, as an
  event source mapping does (``filtering.py`` matches the shared filter pattern);
- a folder stands in for the EFS mount.
"""
