"""The Lambda functions' logic: starter, worker, combiner (and its sharding), recovery, setup, and the runtime they share."""
