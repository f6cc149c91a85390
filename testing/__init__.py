"""What every app's tests share: `factories` (rows with sensible defaults) and `helpers` (the
order path, waiting, the ledger, Kafka and HTTP). Not application code: nothing outside tests
imports it."""
