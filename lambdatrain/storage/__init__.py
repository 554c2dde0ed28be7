"""The run's files on the shared file system (EFS): paths, atomic writes, digests, retention."""
