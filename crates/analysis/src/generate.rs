//! A seeded generator of synthetic but realistic Segment `track` lines for one experiment: every user gets an
//! exposure (assigned exactly as the GrowthBook SDKs would), then page views and orders before and after it, with
//! per-user activity that persists across the exposure (so CUPED has something to work with) and a relative lift
//! on the order rate of every treatment. Same config and seed, same bytes.
//!
//! Events it writes, and the schemas to approve for them:
//! - `Page Viewed` with `path` (string).
//! - `Order Completed` with `revenue` (number, required) and `currency` (string, required).
//! - `Experiment Viewed` with `experimentId`, `variationId` (the variant key): built in.

use std::io::Write;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::time::{DAY_MS, format_rfc3339};

/// The page-view event.
pub const PAGE_VIEWED: &str = "Page Viewed";
/// The order event.
pub const ORDER_COMPLETED: &str = "Order Completed";
/// Properties of the generated events, as `schema propose --property` takes them.
pub const SCHEMAS: [(&str, &[&str]); 2] = [
    (PAGE_VIEWED, &["path:string"]),
    (
        ORDER_COMPLETED,
        &["revenue:number:required", "currency:string:required"],
    ),
];
/// Share of non-exposure events that are orders, in the control.
const ORDER_SHARE: f64 = 0.04;
/// Share of non-exposure events that happen before the exposure.
const PRE_SHARE: f64 = 0.3;
/// Spread of per-user activity (σ of its logarithm).
const ACTIVITY_SIGMA: f64 = 0.6;
/// Share of users known only by an anonymous id.
const ANONYMOUS_SHARE: f64 = 0.1;
/// Share of lines carrying a `messageId`.
const MESSAGE_ID_SHARE: f64 = 0.8;
/// 2025-01-01T00:00:00Z: generated data is in the past of any clock that runs it.
pub const DEFAULT_START_MS: i64 = 1_735_689_600_000;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Exposed users.
    pub users: u64,
    /// Lines in total (at least one exposure per user).
    pub events: u64,
    /// RNG seed.
    pub seed: u64,
    /// Experiment key.
    pub experiment: String,
    /// Variant keys, control first.
    pub variants: Vec<String>,
    /// Traffic weights.
    pub weights: Vec<f64>,
    /// Relative lift of every treatment's order rate (0 for an A/A test).
    pub lift: f64,
    /// First exposure time.
    pub start_ms: i64,
    /// Exposures are spread over this many days.
    pub days: u32,
}

impl Config {
    /// A two-variant experiment with equal weights.
    pub fn new(experiment: &str, users: u64, events: u64, seed: u64) -> Self {
        Self {
            users,
            events,
            seed,
            experiment: experiment.to_owned(),
            variants: vec!["control".into(), "treatment".into()],
            weights: vec![0.5, 0.5],
            lift: 0.0,
            start_ms: DEFAULT_START_MS,
            days: 14,
        }
    }
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Lines.
    pub lines: u64,
    /// Bytes.
    pub bytes: u64,
}

struct Writer<'w, W: Write> {
    out: &'w mut W,
    written: Written,
    seed: u64,
    line: String,
}

impl<W: Write> Writer<'_, W> {
    fn emit(
        &mut self,
        rng: &mut StdRng,
        user: &User,
        event: &str,
        ms: i64,
        properties: &str,
    ) -> std::io::Result<()> {
        use std::fmt::Write as _;
        self.line.clear();
        self.line.push_str("{\"type\":\"track\",");
        if rng.random_bool(MESSAGE_ID_SHARE) {
            let _ = write!(
                self.line,
                "\"messageId\":\"msg-{}-{}\",",
                self.seed, self.written.lines
            );
        }
        let id_field = if user.anonymous {
            "anonymousId"
        } else {
            "userId"
        };
        let _ = writeln!(
            self.line,
            "\"{id_field}\":\"{}\",\"event\":\"{event}\",\"timestamp\":\"{}\",\"properties\":{properties}}}",
            user.id,
            format_rfc3339(ms)
        );
        self.out.write_all(self.line.as_bytes())?;
        self.written.lines += 1;
        self.written.bytes += self.line.len() as u64;
        Ok(())
    }
}

struct User {
    id: String,
    anonymous: bool,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Writes the lines of `config` to `out`.
pub fn generate(config: &Config, out: &mut impl Write) -> std::io::Result<Written> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let assignment = assign::Experiment {
        weights: Some(config.weights.clone()),
        ..assign::Experiment::new(config.experiment.clone(), config.variants.len() as u32)
    };
    let mut writer = Writer {
        out,
        written: Written::default(),
        seed: config.seed,
        line: String::with_capacity(256),
    };
    let per_user = config.events.saturating_sub(config.users) as f64 / config.users.max(1) as f64;
    let activity_mean = (ACTIVITY_SIGMA * ACTIVITY_SIGMA / 2.0).exp();
    let mut carry = 0.0;
    for index in 0..config.users {
        let anonymous = rng.random_bool(ANONYMOUS_SHARE);
        let user = User {
            id: if anonymous {
                format!("anon-{}-{index}", config.seed)
            } else {
                format!("user-{index:08}")
            },
            anonymous,
        };
        let variant = assign::assign(&assignment, &user.id).variation.unwrap_or(0) as usize;
        let exposed_ms =
            config.start_ms + rng.random_range(0..i64::from(config.days.max(1)) * DAY_MS);
        let properties = format!(
            "{{\"experimentId\":\"{}\",\"variationId\":\"{}\"}}",
            config.experiment, config.variants[variant]
        );
        writer.emit(
            &mut rng,
            &user,
            "Experiment Viewed",
            exposed_ms,
            &properties,
        )?;
        let activity = (ACTIVITY_SIGMA * normal(&mut rng)).exp() / activity_mean;
        carry += per_user * activity;
        let mut count = carry.floor() as u64;
        carry -= count as f64;
        // Keep one line for the exposure of each user still to come.
        let remaining = config
            .events
            .saturating_sub(writer.written.lines + (config.users - index - 1));
        if index + 1 == config.users {
            count = remaining;
        }
        let order_share = if variant == 0 {
            ORDER_SHARE
        } else {
            ORDER_SHARE * (1.0 + config.lift)
        };
        for _ in 0..count.min(remaining) {
            user_event(&mut writer, &mut rng, &user, exposed_ms, order_share)?;
        }
    }
    writer.out.flush()?;
    Ok(writer.written)
}

fn user_event<W: Write>(
    writer: &mut Writer<'_, W>,
    rng: &mut StdRng,
    user: &User,
    exposed_ms: i64,
    order_share: f64,
) -> std::io::Result<()> {
    let pre = rng.random_bool(PRE_SHARE);
    let ms = if pre {
        exposed_ms - rng.random_range(1..7 * DAY_MS)
    } else {
        exposed_ms + rng.random_range(1..10 * DAY_MS)
    };
    let share = if pre { ORDER_SHARE } else { order_share };
    if rng.random_bool(share.clamp(0.0, 1.0)) {
        let revenue = (3.0 + 0.6 * normal(rng)).exp();
        let properties = format!("{{\"revenue\":{revenue:.2},\"currency\":\"EUR\"}}");
        writer.emit(rng, user, ORDER_COMPLETED, ms, &properties)
    } else {
        let page = rng.random_range(0..20u32);
        let properties = format!("{{\"path\":\"/p/{page}\"}}");
        writer.emit(rng, user, PAGE_VIEWED, ms, &properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_exact_line_count() {
        let config = Config::new("checkout", 200, 1_000, 7);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let written = generate(&config, &mut a).expect("memory write");
        generate(&config, &mut b).expect("memory write");
        assert_eq!(a, b);
        assert_eq!(written.lines, 1_000);
        assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 1_000);
        let other = Config { seed: 8, ..config };
        let mut c = Vec::new();
        generate(&other, &mut c).expect("memory write");
        assert_ne!(a, c);
    }

    #[test]
    fn lines_are_valid_track_calls() {
        let config = Config::new("checkout", 50, 400, 1);
        let mut out = Vec::new();
        generate(&config, &mut out).expect("memory write");
        let mut view = model::RegistryView::default();
        for (event, properties) in SCHEMAS {
            let schema = model::EventSchema {
                event: event.into(),
                version: 1,
                properties: properties
                    .iter()
                    .map(|p| p.parse().expect("valid"))
                    .collect(),
                legal_basis: String::new(),
                retention_days: 0,
                status: model::StandardStatus::Approved,
                proposed_by: String::new(),
                approved_by: None,
            };
            view.schemas.insert(schema.key(), schema);
        }
        let schemas = crate::track::Schemas::from_view(&view);
        for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            crate::track::check_line(line, &schemas, DEFAULT_START_MS + 400 * DAY_MS)
                .unwrap_or_else(|reason| panic!("{reason}: {}", String::from_utf8_lossy(line)));
        }
    }
}
