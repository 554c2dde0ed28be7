"""The DynamoDB ledger: the table's schema, its items as data, the calls and their conditions."""
