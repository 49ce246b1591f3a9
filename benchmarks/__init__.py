"""One script per `make bench-*` target; results in benchmarks/results/<name>.json."""
