//! Real mode: the scenario's nodes as real `node::daemon` instances in this process (libp2p on 127.0.0.1, sled
//! in temp data dirs), driven on the wall clock with scenario times multiplied by a time scale. Partitions and
//! flapping links are the nodes' operator block sets (`POST /v1/block`), crashes stop a daemon and restarts run it
//! again on its data dir, revocations are council writes, and a hostile node is a raw libp2p client with the
//! member's key. The workload is deterministic mode's generator; what the network does with it is not, so a seed
//! replays the same writes but not the same report. At the end every daemon is stopped and each node's store is
//! read to check the same invariants as deterministic mode.
//!
//! Not simulated: link latency, loss and duplication (`[network]` and `links`: loopback TCP has none), which the
//! report says in its notes.

mod cluster;
mod driver;
mod hostile;
mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::report::Report;
use crate::scenario::Scenario;
use cluster::{Cluster, Settings};
use driver::Driver;

/// Real mode runs at most this many nodes (every pair of nodes holds a connection).
pub const MAX_NODES: usize = 32;
/// Scenario times are multiplied by this unless `--time-scale` says otherwise: a 120 s scenario runs in 12 s.
pub const DEFAULT_TIME_SCALE: f64 = 0.1;
/// The nodes announce their heads at least this often, whatever the scale.
pub const MIN_ANNOUNCE_INTERVAL_MS: u64 = 200;

/// Panics anywhere in this process since the hook was installed (node threads, tasks, the driver).
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Why a real run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The scenario asks for something real nodes cannot be.
    #[error("--mode real: {0}")]
    Unsupported(String),
    /// The time scale is not a positive number.
    #[error("--time-scale: {0} is not a number in (0, 100]")]
    TimeScale(f64),
    /// Founding the data dirs or starting a node failed.
    #[error("setting up {node}: {detail}")]
    Setup {
        /// The node.
        node: String,
        /// What failed.
        detail: String,
    },
    /// The temp dir for the data dirs could not be made.
    #[error("creating the temp data dirs: {0}")]
    TempDir(std::io::Error),
    /// The tokio runtime could not start.
    #[error("starting the tokio runtime: {0}")]
    Runtime(std::io::Error),
}

/// Options of a real run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Scenario times (schedule, workload, duration, convergence bound, announce interval) are multiplied by this.
    pub time_scale: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            time_scale: DEFAULT_TIME_SCALE,
        }
    }
}

/// Whether real mode can run `scenario`.
pub fn check(scenario: &Scenario, options: &Options) -> Result<(), RealError> {
    let scale = options.time_scale;
    if !(scale > 0.0 && scale <= 100.0) {
        return Err(RealError::TimeScale(scale));
    }
    let names = scenario.node_names();
    if names.len() > MAX_NODES {
        return Err(RealError::Unsupported(format!(
            "{} nodes; real mode runs at most {MAX_NODES} (use deterministic mode for scale)",
            names.len()
        )));
    }
    if let Some(region) = scenario.regions.iter().find(|r| r.observers > 0) {
        return Err(RealError::Unsupported(format!(
            "region `{}` has observers, and a real node syncs only with members (the member gate refuses others)",
            region.name
        )));
    }
    Ok(())
}

/// Runs `scenario` with real nodes. `replay` is the command line that runs it again.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    options: &Options,
    replay: String,
) -> Result<Report, RealError> {
    check(scenario, options)?;
    install_panic_counter();
    let panics_before = panics();
    let settings = Settings::new(scenario, options.time_scale);
    let cluster = Cluster::found(scenario, seed, settings)?;
    let mut driver = Driver::new(scenario, seed, options.time_scale, cluster);
    driver.start_all()?;
    driver.run();
    let report = driver.finish(replay, panics_before);
    Ok(report)
}

/// `ms` of scenario time on the wall clock.
pub(crate) fn scaled(ms: u64, scale: f64) -> u64 {
    (ms as f64 * scale).round() as u64
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Panics in this process so far (once the counter is installed).
fn panics() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

fn install_panic_counter() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}
