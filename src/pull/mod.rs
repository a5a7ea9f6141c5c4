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
