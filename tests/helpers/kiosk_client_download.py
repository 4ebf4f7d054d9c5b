"""Run under the kiosk-client venv: save one job's `output_url` with kiosk-client's own code.

kiosk_client.job.Job.download_output (kiosk-client 0.8.4 kiosk_client/job.py:343-369) saves the
body to `output_dir/` + `output_url.split('/')[-1]`. Exit 0 and print the saved path, or exit 1
with the exception's type and text.
"""

import os
import sys

from kiosk_client.job import Job
from twisted.internet import task


def main(reactor, output_url, output_dir):
    job = Job(host="http://127.0.0.1:9", filepath="cells.tif", model_name="", model_version="",
              output_dir=output_dir, update_interval=1)
    job.output_url = output_url
    deferred = job.download_output()

    def report(_):
        print("SAVED", os.listdir(output_dir))

    return deferred.addCallback(report)


if __name__ == "__main__":
    try:
        task.react(main, sys.argv[1:])
    except SystemExit as exc:
        sys.exit(exc.code)
