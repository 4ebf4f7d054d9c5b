"""The `redis-consumer` command line. Each subcommand lives in its own module."""
