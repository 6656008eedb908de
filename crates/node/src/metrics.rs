//! `/metrics`: the node's numbers in the Prometheus (OpenMetrics) text format, through the `prometheus-client`
//! crate. Levels (changes held, peers connected) are gauges, running totals are counters (named `..._total`), and
//! totals kept by reason are one labelled family each.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Running totals kept by a label: `(name without _total, help, label name, [(label value, count)])`.
pub type FamilyValues = (&'static str, &'static str, &'static str, Vec<(String, u64)>);

/// What one scrape reports, gathered from the actor and the network layer.
#[derive(Default)]
pub struct Scrape {
    /// `(name, help, value)` of each level.
    pub gauges: Vec<(&'static str, &'static str, i64)>,
    /// `(name without _total, help, value)` of each running total.
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Each total kept by reason.
    pub families: Vec<FamilyValues>,
}

impl Scrape {
    /// A level.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) -> &mut Self {
        self.gauges
            .push((name, help, i64::try_from(value).unwrap_or(i64::MAX)));
        self
    }

    /// A running total (exposed as `name_total`).
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) -> &mut Self {
        self.counters.push((name, help, value));
        self
    }

    /// Running totals by `label` (exposed as `name_total{label="..."}`).
    pub fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: impl IntoIterator<Item = (String, u64)>,
    ) -> &mut Self {
        self.families
            .push((name, help, label, values.into_iter().collect()));
        self
    }

    /// The text a scraper reads.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        for (name, help, value) in &self.gauges {
            let gauge = Gauge::<i64>::default();
            gauge.set(*value);
            registry.register(*name, *help, gauge);
        }
        for (name, help, value) in &self.counters {
            let counter = Counter::<u64>::default();
            counter.inc_by(*value);
            registry.register(*name, *help, counter);
        }
        for (name, help, label, values) in &self.families {
            let family = Family::<Vec<(String, String)>, Counter>::default();
            for (value, count) in values {
                family
                    .get_or_create(&vec![((*label).to_owned(), value.clone())])
                    .inc_by(*count);
            }
            registry.register(*name, *help, family);
        }
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

/// The content type of [`Scrape::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::Scrape;

    #[test]
    fn levels_are_gauges_and_totals_are_counters_with_their_labels() {
        let mut scrape = Scrape::default();
        scrape
            .gauge("growthmesh_peers_connected", "Connected peers.", 3)
            .counter("growthmesh_sync_round_trips", "Pull round trips.", 7)
            .family(
                "growthmesh_scorecards_refused",
                "Scorecards refused.",
                "reason",
                [("stale".to_owned(), 2)],
            );
        let text = scrape.encode();
        assert!(
            text.contains(
                "# TYPE growthmesh_peers_connected gauge\ngrowthmesh_peers_connected 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE growthmesh_sync_round_trips counter\ngrowthmesh_sync_round_trips_total 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("growthmesh_scorecards_refused_total{reason=\"stale\"} 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
