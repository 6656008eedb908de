"""Drives a running growthmesh node with the official SDKs, as an app would: segment-analytics-python sends events
to its Segment tracking API, and the growthbook SDK loads its features and assigns users, its tracking callback
sending each exposure back through Segment as an `Experiment Viewed` event.

Prints one JSON document: what each SDK did, for the Rust test (crates/cli/tests/sdk_cli.rs) to check against the
node and against `growthmesh assign`. Run by that test only.
"""

import argparse
import json
import logging
import os
import sys
import time

from growthbook import GrowthBook
from segment.analytics import Client
from segment.analytics.request import APIError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--client-key", required=True)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--watch", help="stream features and wait until this feature appears")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    if args.watch:
        watch(args)
        return

    errors = []

    def on_error(error, _batch):
        errors.append(str(error))

    # Events through the Segment SDK, gzipped and batched; each sent twice (a retry), as a flaky network would.
    segment = Client(args.write_key, host=args.api, gzip=True, on_error=on_error, max_retries=1, upload_size=100)
    for n in range(args.users):
        for _ in range(2):
            segment.track(
                user_id=f"user-{n}",
                event="Order Completed",
                properties={"revenue": 10 + n % 7, "currency": "EUR"},
                message_id=f"order-{n}",
            )
    segment.identify(user_id="user-0", traits={"plan": "pro"})
    segment.page(user_id="user-0", name="Home")

    # Assignments through the GrowthBook SDK, loaded from the node; exposures tracked through Segment.
    def on_viewed(experiment, result, user_context=None):
        segment.track(
            user_id=result.hashValue,
            event="Experiment Viewed",
            properties={"experimentId": experiment.key, "variationId": result.key},
        )

    assignments = {}
    values = {}
    features = None
    for n in range(args.users):
        user = f"user-{n}"
        gb = GrowthBook(
            api_host=args.api,
            client_key=args.client_key,
            attributes={"id": user},
            on_experiment_viewed=on_viewed,
        )
        gb.load_features()
        if features is None:
            features = sorted(gb.get_features().keys())
        for key in features:
            result = gb.eval_feature(key)
            experiment = result.experimentResult
            in_experiment = experiment is not None and experiment.inExperiment
            assignments.setdefault(key, {})[user] = experiment.variationId if in_experiment else None
            values.setdefault(key, {})[user] = result.value
        gb.destroy()
    segment.flush()
    segment.join()

    # A wrong write key: the SDK reports the node's refusal.
    refused = []
    try:
        bad = Client("wk_" + "0" * 48, host=args.api, sync_mode=True, max_retries=0)
        bad.track(user_id="user-0", event="Order Completed", properties={"revenue": 1, "currency": "EUR"})
    except APIError as error:
        refused.append({"status": error.status, "code": error.code, "message": error.message})

    json.dump(
        {
            "features": features or [],
            "assignments": assignments,
            "values": values,
            "errors": errors,
            "refused": refused,
        },
        sys.stdout,
    )


def watch(args):
    """Streams the features (GrowthBook's server-sent events) and reports when `--watch` appears."""
    gb = GrowthBook(api_host=args.api, client_key=args.client_key, attributes={"id": "user-1"}, streaming=True)
    before = sorted(gb.get_features().keys())
    print(json.dumps({"ready": True, "features": before}), flush=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        if args.watch in gb.get_features():
            result = gb.eval_feature(args.watch)
            experiment = result.experimentResult
            print(json.dumps({"seen": True, "value": result.value,
                              "variation": experiment.variationId if experiment and experiment.inExperiment else None}),
                  flush=True)
            # The SDK's stream thread takes up to 10 s to wind down; the answer is out, so leave at once.
            os._exit(0)
        time.sleep(0.1)
    print(json.dumps({"seen": False, "features": sorted(gb.get_features().keys())}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
