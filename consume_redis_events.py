"""Worker entrypoint kept for DeepCell Kiosk compatibility: `python consume_redis_events.py`.

Configuration comes from the environment; see the README's configuration table.
"""

import sys

from redis_consumer.cli.consume import run

if __name__ == "__main__":
    sys.exit(run())
