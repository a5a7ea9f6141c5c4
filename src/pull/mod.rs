//! Pulling from collectors: one task per endpoint ([`scheduler`]) running the pull protocol
//! ([`protocol`]) over HTTP ([`client`]), reporting to a shared [`status::StatusBoard`].
//!
//! With the Redis queue, several processes share the endpoints through leases
//! ([`ownership`]): a process pulls only the endpoints it holds, and confirms only after
//! checking it still holds them.
//!
//! Invariants: a pull awaits only its HTTP request and one deadline-bounded hand-off; the
//! collector is confirmed only after the hand-off succeeded; the cursor moves only after a
//! successful confirm.

pub mod client;
pub mod ownership;
pub mod protocol;
pub mod scheduler;
pub mod status;

pub use client::{ClientError, PullClient, PullStats};
pub use ownership::{EndpointOwnership, LeaseKeeper};
pub use protocol::{PullOutcome, PullOutcomeLabel, Puller};
pub use status::{EndpointStatus, LeaseOwner, StatusBoard};

use crate::telemetry::metrics::{self as m, zero_counters, zero_histograms};

/// Registers at 0 every pull metric of `endpoint` whose labels are known before its first
/// tick, so that its counters and histograms are exported from the start (`docs/metrics.md`).
pub fn register_metrics(endpoint: &str) {
    let ep: &[&str] = &[endpoint];
    let outcomes: Vec<&str> = PullOutcomeLabel::ALL.iter().map(|l| l.as_str()).collect();
    zero_counters(
        m::PULLS_TOTAL,
        &[("endpoint", ep), ("outcome", outcomes.as_slice())],
    );
    for name in [
        m::PULL_SKIPPED_TICKS_TOTAL,
        m::PULL_MISSED_TICKS_TOTAL,
        m::PULL_RESETS_TOTAL,
        m::PULL_LEASE_ACQUISITIONS_TOTAL,
        m::PULL_LEASE_RELEASES_TOTAL,
        m::PULL_LEASE_LOST_TICKS_TOTAL,
    ] {
        zero_counters(name, &[("endpoint", ep)]);
    }
    let reasons: Vec<&str> = ownership::LeaseLoss::ALL.map(|l| l.as_str()).to_vec();
    zero_counters(
        m::PULL_LEASE_LOSSES_TOTAL,
        &[("endpoint", ep), ("reason", reasons.as_slice())],
    );
    zero_counters(
        m::RECORDS_TOTAL,
        &[
            ("stage", &["pull"][..]),
            ("outcome", &["valid", "rejected"][..]),
        ],
    );
    zero_histograms(m::PULL_DURATION_SECONDS, &[("endpoint", ep)]);
    zero_histograms(m::PULL_SCHEDULE_DRIFT_SECONDS, &[("endpoint", ep)]);
}
