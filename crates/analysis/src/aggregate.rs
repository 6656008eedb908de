//! Per-user aggregation: the first exposure of each user fixes their variant and the start of every metric window;
//! each metric event is credited to the user's value when it falls inside the window after that start (or to the
//! CUPED covariate when it falls inside the same-length window before it). Users are then reduced to per-variant
//! sufficient statistics, after optional winsorizing.
//!
//! Inputs arrive in store order (by user bytes, then time), so joining events to exposures is a merge, not a hash
//! lookup; input in any other order is still joined correctly, only slower.

use std::cmp::Ordering;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::plan::{MetricPlan, Source};

/// Users exposed to an experiment, sorted by id, each with the variant and time of their first exposure.
#[derive(Clone, Debug, Default)]
pub struct Exposures {
    arena: Vec<u8>,
    offsets: Vec<usize>,
    variant: Vec<u8>,
    first_ms: Vec<i64>,
    variants: usize,
    /// Exposure events read.
    pub events: u64,
    /// Users exposed to more than one variation: left out, as GrowthBook does.
    pub multiple_variations: u64,
    /// Users whose first exposure names no variant of the experiment: left out.
    pub unknown_variation: u64,
}

impl Exposures {
    /// Number of users kept.
    pub fn len(&self) -> usize {
        self.variant.len()
    }

    /// Whether no user is kept.
    pub fn is_empty(&self) -> bool {
        self.variant.is_empty()
    }

    /// The id of user `index`.
    pub fn user(&self, index: usize) -> &[u8] {
        &self.arena[self.offsets[index]..self.offsets[index + 1]]
    }

    /// The variant index of user `index`.
    pub fn variant(&self, index: usize) -> usize {
        usize::from(self.variant[index])
    }

    /// The first exposure of user `index` (Unix ms).
    pub fn first_ms(&self, index: usize) -> i64 {
        self.first_ms[index]
    }

    /// Users per variant.
    pub fn counts(&self) -> Vec<u64> {
        let mut counts = vec![0; self.variants];
        for &v in &self.variant {
            counts[usize::from(v)] += 1;
        }
        counts
    }

    /// A cursor for joining events that arrive sorted by user.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            exposures: self,
            next: 0,
        }
    }
}

/// One user's exposures as read so far.
#[derive(Debug)]
struct Row {
    user: Vec<u8>,
    first_ms: i64,
    variant: Option<u8>,
    conflict: bool,
}

/// Builds [`Exposures`] from exposure events.
#[derive(Debug)]
pub struct ExposureBuilder {
    variant_keys: Vec<Vec<u8>>,
    rows: Vec<Row>,
    sorted: bool,
    events: u64,
}

impl ExposureBuilder {
    /// A builder for an experiment with these variant keys (control first).
    pub fn new(variants: &[String]) -> Self {
        Self {
            variant_keys: variants.iter().map(|v| v.as_bytes().to_vec()).collect(),
            rows: Vec::new(),
            sorted: true,
            events: 0,
        }
    }

    /// The variant a `variationId` names: a variant key, or its index (`0` is the control).
    fn resolve(&self, variation: &[u8]) -> Option<u8> {
        if let Some(index) = self.variant_keys.iter().position(|k| k == variation) {
            return u8::try_from(index).ok();
        }
        let index: usize = std::str::from_utf8(variation).ok()?.parse().ok()?;
        (index < self.variant_keys.len())
            .then_some(index)
            .and_then(|i| u8::try_from(i).ok())
    }

    /// Adds one exposure event. Events of one user should come together and in time order (store order).
    pub fn push(&mut self, user: &[u8], timestamp_ms: i64, variation: &[u8]) {
        self.events += 1;
        let variant = self.resolve(variation);
        if let Some(last) = self.rows.last_mut() {
            match last.user.as_slice().cmp(user) {
                Ordering::Equal => {
                    // A different variant makes the user unusable, so which exposure came first only matters
                    // for the window start.
                    last.first_ms = last.first_ms.min(timestamp_ms);
                    last.conflict |= last.variant != variant;
                    return;
                }
                Ordering::Greater => self.sorted = false,
                Ordering::Less => {}
            }
        }
        self.rows.push(Row {
            user: user.to_vec(),
            first_ms: timestamp_ms,
            variant,
            conflict: false,
        });
    }

    /// The exposures: first exposure per user, users in several variations or unknown ones left out.
    pub fn finish(mut self) -> Exposures {
        if !self.sorted {
            self.regroup();
        }
        let mut out = Exposures {
            variants: self.variant_keys.len(),
            events: self.events,
            offsets: vec![0],
            ..Exposures::default()
        };
        for row in self.rows {
            match row.variant {
                _ if row.conflict => out.multiple_variations += 1,
                None => out.unknown_variation += 1,
                Some(variant) => {
                    out.arena.extend_from_slice(&row.user);
                    out.offsets.push(out.arena.len());
                    out.variant.push(variant);
                    out.first_ms.push(row.first_ms);
                }
            }
        }
        out
    }

    /// Input was not in store order: sort by user and time and merge each user's rows.
    fn regroup(&mut self) {
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by(|a, b| a.user.cmp(&b.user).then(a.first_ms.cmp(&b.first_ms)));
        for row in rows {
            match self.rows.last_mut() {
                Some(last) if last.user == row.user => {
                    last.conflict |= row.conflict || last.variant != row.variant;
                }
                _ => self.rows.push(row),
            }
        }
    }
}

/// Finds the exposed user of each event, for events sorted by user.
#[derive(Debug)]
pub struct Cursor<'a> {
    exposures: &'a Exposures,
    next: usize,
}

impl Cursor<'_> {
    /// The index of `user` among the exposed users.
    pub fn find(&mut self, user: &[u8]) -> Option<usize> {
        let exposures = self.exposures;
        let len = exposures.len();
        if self.next > 0 && exposures.user(self.next - 1) >= user {
            if exposures.user(self.next - 1) == user {
                return Some(self.next - 1);
            }
            // Out of order: search from scratch.
            self.next = partition(exposures, user);
        }
        while self.next < len {
            match exposures.user(self.next).cmp(user) {
                Ordering::Less => self.next += 1,
                Ordering::Equal => {
                    self.next += 1;
                    return Some(self.next - 1);
                }
                Ordering::Greater => return None,
            }
        }
        None
    }
}

/// The first index whose user is not below `user`.
fn partition(exposures: &Exposures, user: &[u8]) -> usize {
    let (mut low, mut high) = (0, exposures.len());
    while low < high {
        let mid = (low + high) / 2;
        if exposures.user(mid) < user {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

/// Per-user values of one metric.
#[derive(Clone, Debug)]
pub struct MetricValues {
    /// Value after exposure (ratio: numerator).
    pub post: Vec<f64>,
    /// Covariate before exposure (not kept for ratios).
    pub pre: Vec<f64>,
    /// Ratio denominator after exposure (empty otherwise).
    pub denominator: Vec<f64>,
    /// Events credited to a window.
    pub events_used: u64,
    /// Events whose summed property was missing or not a number.
    pub events_without_value: u64,
}

impl MetricValues {
    /// Zeroed values for `users` users.
    pub fn new(metric: &MetricPlan, users: usize) -> Self {
        let ratio = metric.denominator.is_some();
        Self {
            post: vec![0.0; users],
            pre: if ratio { Vec::new() } else { vec![0.0; users] },
            denominator: if ratio { vec![0.0; users] } else { Vec::new() },
            events_used: 0,
            events_without_value: 0,
        }
    }

    /// Credits one event of user `user` (first exposed at `first_ms`) to the metric.
    pub fn add(
        &mut self,
        metric: &MetricPlan,
        denominator: bool,
        user: usize,
        first_ms: i64,
        timestamp_ms: i64,
        properties: &[u8],
    ) {
        let offset = timestamp_ms.saturating_sub(first_ms);
        let post = (0..metric.window_ms).contains(&offset);
        let pre = !post && (-metric.window_ms..0).contains(&offset);
        let slot = match (post, pre, denominator) {
            (true, _, false) => &mut self.post,
            (true, _, true) => &mut self.denominator,
            (false, true, false) if !self.pre.is_empty() => &mut self.pre,
            _ => return,
        };
        let source: &Source = if denominator {
            metric.denominator.as_ref().unwrap_or(&metric.numerator)
        } else {
            &metric.numerator
        };
        let value = match &source.property {
            None => 1.0,
            Some(name) => match number_property(properties, name) {
                Some(value) => value,
                None => {
                    self.events_without_value += 1;
                    return;
                }
            },
        };
        self.events_used += 1;
        if metric.is_binomial() {
            slot[user] = 1.0;
        } else {
            slot[user] += value;
        }
    }

    /// Winsorizes values above the metric's capping percentile (each series on its own percentile).
    pub fn cap(&mut self, metric: &MetricPlan) {
        let Some(percentile) = metric.capping.filter(|_| !metric.is_binomial()) else {
            return;
        };
        for series in [&mut self.post, &mut self.pre, &mut self.denominator] {
            if let Some(cap) = percentile_of(series, percentile) {
                for value in series.iter_mut() {
                    *value = value.min(cap);
                }
            }
        }
    }
}

/// The value at `percentile` (nearest rank) of `values`.
fn percentile_of(values: &[f64], percentile: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut copy = values.to_vec();
    let rank = ((percentile * copy.len() as f64).ceil() as usize).clamp(1, copy.len()) - 1;
    let (_, value, _) = copy.select_nth_unstable_by(rank, f64::total_cmp);
    Some(*value)
}

/// Sufficient statistics of one metric in one variant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sums {
    /// Users.
    pub n: u64,
    /// Σ value (ratio: numerator).
    pub sum: f64,
    /// Σ value².
    pub sum_squares: f64,
    /// Σ covariate.
    pub pre_sum: f64,
    /// Σ covariate².
    pub pre_sum_squares: f64,
    /// Σ value·covariate.
    pub post_pre_sum: f64,
    /// Σ denominator.
    pub denominator_sum: f64,
    /// Σ denominator².
    pub denominator_sum_squares: f64,
    /// Σ numerator·denominator.
    pub numerator_denominator_sum: f64,
}

/// Reduces per-user values to per-variant sums.
pub fn sums(exposures: &Exposures, values: &MetricValues, variants: usize) -> Vec<Sums> {
    let mut out = vec![Sums::default(); variants];
    let has_pre = !values.pre.is_empty();
    let has_denominator = !values.denominator.is_empty();
    for (user, &post) in values.post.iter().enumerate() {
        let s = &mut out[exposures.variant(user)];
        s.n += 1;
        s.sum += post;
        s.sum_squares += post * post;
        if has_pre {
            let pre = values.pre[user];
            s.pre_sum += pre;
            s.pre_sum_squares += pre * pre;
            s.post_pre_sum += post * pre;
        }
        if has_denominator {
            let d = values.denominator[user];
            s.denominator_sum += d;
            s.denominator_sum_squares += d * d;
            s.numerator_denominator_sum += post * d;
        }
    }
    out
}

/// The number under `name` in a JSON object, without building the object.
pub fn number_property(json: &[u8], name: &str) -> Option<f64> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    Pick(name).deserialize(&mut deserializer).ok().flatten()
}

struct Pick<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Option<f64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<f64>, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.0))? {
            if matches {
                found = map.next_value::<serde_json::Value>()?.as_f64();
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

    fn metric(kind: &'static str, property: Option<&str>) -> MetricPlan {
        MetricPlan {
            key: "m".into(),
            kind,
            direction: model::Direction::Higher,
            capping: None,
            window_ms: 7 * DAY_MS,
            guardrail: false,
            numerator: Source {
                event: "E".into(),
                property: property.map(str::to_owned),
            },
            denominator: None,
        }
    }

    fn exposures() -> Exposures {
        let mut builder = ExposureBuilder::new(&["control".into(), "treatment".into()]);
        builder.push(b"a", 100, b"control");
        builder.push(b"a", 200, b"control");
        builder.push(b"b", 50, b"1");
        builder.push(b"c", 10, b"control");
        builder.push(b"c", 20, b"treatment");
        builder.push(b"d", 10, b"nine");
        builder.push(b"e", 30, b"treatment");
        builder.finish()
    }

    #[test]
    fn first_exposure_wins_and_conflicts_are_dropped() {
        let e = exposures();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e.user(0), e.variant(0), e.first_ms(0)),
            (&b"a"[..], 0, 100)
        );
        assert_eq!((e.user(1), e.variant(1)), (&b"b"[..], 1));
        assert_eq!((e.multiple_variations, e.unknown_variation), (1, 1));
        assert_eq!(e.counts(), vec![1, 2]);
    }

    #[test]
    fn unsorted_exposures_give_the_same_result() {
        let mut builder = ExposureBuilder::new(&["control".into(), "treatment".into()]);
        builder.push(b"e", 30, b"treatment");
        builder.push(b"a", 200, b"control");
        builder.push(b"b", 50, b"1");
        builder.push(b"a", 100, b"control");
        let e = builder.finish();
        assert_eq!((e.user(0), e.first_ms(0)), (&b"a"[..], 100));
        assert_eq!(e.counts(), vec![1, 2]);
    }

    #[test]
    fn cursor_joins_sorted_and_unsorted_users() {
        let e = exposures();
        let mut cursor = e.cursor();
        assert_eq!(cursor.find(b"a"), Some(0));
        assert_eq!(cursor.find(b"a"), Some(0));
        assert_eq!(cursor.find(b"c"), None);
        assert_eq!(cursor.find(b"e"), Some(2));
        assert_eq!(cursor.find(b"b"), Some(1));
        assert_eq!(cursor.find(b"z"), None);
    }

    #[test]
    fn windows_split_post_and_pre() {
        let e = exposures();
        let m = metric("mean", Some("revenue"));
        let mut values = MetricValues::new(&m, e.len());
        let first = e.first_ms(0);
        values.add(&m, false, 0, first, first, br#"{"revenue":2.5}"#);
        values.add(
            &m,
            false,
            0,
            first,
            first + 7 * DAY_MS,
            br#"{"revenue":100}"#,
        );
        values.add(
            &m,
            false,
            0,
            first,
            first - 1,
            br#"{"x":[1,{"a":2}],"revenue":4}"#,
        );
        values.add(&m, false, 0, first, first + 1, br#"{"revenue":"free"}"#);
        assert_eq!((values.post[0], values.pre[0]), (2.5, 4.0));
        assert_eq!((values.events_used, values.events_without_value), (2, 1));
        let s = sums(&e, &values, 2);
        assert_eq!((s[0].n, s[0].sum, s[0].post_pre_sum), (1, 2.5, 10.0));
        assert_eq!(s[1].n, 2);
    }

    #[test]
    fn binomial_counts_a_user_once_and_capping_winsorizes() {
        let e = exposures();
        let b = metric("binomial", None);
        let mut values = MetricValues::new(&b, e.len());
        for _ in 0..3 {
            values.add(&b, false, 1, e.first_ms(1), e.first_ms(1) + 5, b"{}");
        }
        assert_eq!(values.post, vec![0.0, 1.0, 0.0]);
        let mut capped = metric("mean", None);
        capped.capping = Some(0.5);
        let mut values = MetricValues::new(&capped, 3);
        values.post = vec![1.0, 2.0, 30.0];
        values.cap(&capped);
        assert_eq!(values.post, vec![1.0, 2.0, 2.0]);
    }

    #[test]
    fn number_property_reads_one_key() {
        assert_eq!(number_property(br#"{"a":1,"b":2.5}"#, "b"), Some(2.5));
        assert_eq!(number_property(br#"{"a\u0062":7}"#, "ab"), Some(7.0));
        assert_eq!(number_property(br#"{"a":"1"}"#, "a"), None);
        assert_eq!(number_property(b"not json", "a"), None);
    }
}
