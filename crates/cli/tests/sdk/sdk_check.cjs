// Drives a running growthmesh node with the official JavaScript SDKs, as a Node.js app would:
// @segment/analytics-node sends events to its Segment tracking API, and @growthbook/growthbook loads its features
// and assigns users (ids with emoji and accents included: the SDK hashes UTF-16 code units), its tracking callback
// sending each exposure back through Segment as an `Experiment Viewed` event.
//
// Prints one JSON document for the Rust test (crates/cli/tests/sdk_cli.rs). Run by that test only, with NODE_PATH
// pointing at the packages pinned in package.json.
"use strict";

const { GrowthBook } = require("@growthbook/growthbook");
const { Analytics } = require("@segment/analytics-node");

function option(name) {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0 || at + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[at + 1];
}

async function main() {
  const api = option("api");
  const users = JSON.parse(option("users"));
  const errors = [];
  const analytics = new Analytics({
    writeKey: option("write-key"),
    host: api,
    maxEventsInBatch: 100,
    flushInterval: 100,
    maxRetries: 1,
  });
  analytics.on("error", (error) => errors.push(String(error.reason ?? error.message ?? error.code ?? error)));

  for (const [n, user] of users.entries()) {
    for (let attempt = 0; attempt < 2; attempt++) {
      analytics.track({
        userId: user,
        event: "Order Completed",
        properties: { revenue: 10 + (n % 7), currency: "EUR" },
        messageId: `js-order-${n}`,
      });
    }
  }

  const gb = new GrowthBook({
    apiHost: api,
    clientKey: option("client-key"),
    trackingCallback: (experiment, result) => {
      analytics.track({
        userId: result.hashValue,
        event: "Experiment Viewed",
        properties: { experimentId: experiment.key, variationId: result.key },
      });
    },
  });
  const init = await gb.init({ timeout: 10000 });
  if (!init.success) throw new Error(`features did not load: ${JSON.stringify(init)}`);
  const features = Object.keys(gb.getFeatures()).sort();
  const assignments = {};
  const values = {};
  for (const user of users) {
    await gb.setAttributes({ id: user });
    for (const key of features) {
      const result = gb.evalFeature(key);
      const experiment = result.experimentResult;
      (assignments[key] ??= {})[user] = experiment && experiment.inExperiment ? experiment.variationId : null;
      (values[key] ??= {})[user] = result.value;
    }
  }
  gb.destroy();
  await analytics.closeAndFlush({ timeout: 20000 });
  process.stdout.write(JSON.stringify({ features, assignments, values, errors }));
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
