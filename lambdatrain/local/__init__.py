"""The local stack: AWS on one machine, running the very same handler code.

- ``moto`` serves DynamoDB (with streams) and S3 on 127.0.0.1, one request at a time (``moto_server.py``);
- ``api.py`` answers Lambda's Invoke API as Lambda does; ``service.py`` keeps each function's pool
  of warm, killable processes (``environment.py``; ``sandbox.py`` is what runs inside them), its
  reserved concurrency and its asynchronous queue; ``errors.py`` is how an invocation fails;
- ``poller.py`` reads the table's stream and delivers filtered batches to the combiner, as an
  event source mapping does (``filtering.py`` matches the shared filter pattern);
- a folder stands in for the EFS mount.
"""
