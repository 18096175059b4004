"""`python -m bench`: run every benchmark and print its ratios."""

from __future__ import annotations

import logging
import sys

from bench import ack_latency, audit_review, health_sweep, load, watch_polling


def main() -> int:
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # the queueing is the point
    watch_polling.main(sys.argv[1:])
    ack_latency.main(sys.argv[1:])
    load.main(sys.argv[1:])
    audit_review.main(sys.argv[1:])
    health_sweep.main(sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
