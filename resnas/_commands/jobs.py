"""`resnas jobs status|logs|stop JOB_ID`: follow and manage searches submitted with `resnas submit`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from resnas._errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


def _run(args: argparse.Namespace) -> int:
    from resnas._ray import job_client

    with job_client(args.address) as client:
        return _act(client, args)


def _act(client: JobSubmissionClient, args: argparse.Namespace) -> int:
    """Status, logs or stop of one job."""
    from resnas._commands.submit import DRIVER_KEY, follow

    try:
        if args.action == "logs":
            if args.follow:
                return follow(client, args.job_id)
            sys.stdout.write(client.get_job_logs(args.job_id))
        elif args.action == "status":
            info = client.get_job_info(args.job_id)
            print(f"{args.job_id}: {info.status.value.lower()}" + (f" ({info.message})" if info.message else ""))
            if DRIVER_KEY in (info.metadata or {}):  # the job server does not report a job's reservation
                print(f"driver: {info.metadata[DRIVER_KEY]} reserved on the head node")
        elif client.stop_job(args.job_id):
            print(f"{args.job_id}: stop requested")
        else:
            print(f"{args.job_id}: already {client.get_job_status(args.job_id).value.lower()}")
    except RuntimeError as e:  # the job server's answer to an unknown job id
        raise UserError(f"{args.job_id}: {str(e).strip().splitlines()[0]}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="status, logs or stop of a search submitted with `resnas submit`",
                       description="Follow and manage Ray jobs (needs ray[default]: pip install 'resnas[cluster]').")
    p.add_argument("action", choices=["status", "logs", "stop"])
    p.add_argument("job_id", metavar="JOB_ID", help="the id `resnas submit` printed")
    p.add_argument("--address", help="the cluster's job server, the head's dashboard: http://HEAD:8265 "
                                      "(default: $RAY_ADDRESS, else the cluster started on this machine)")
    p.add_argument("--follow", action="store_true", help="logs: keep streaming until the job ends")
    p.set_defaults(func=_run)
