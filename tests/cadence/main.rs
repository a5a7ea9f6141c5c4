//! The cadence proof (invariant 1 of `docs/architecture.md`), in its own test binary. It measures
//! pull-schedule drift in milliseconds on a 2-core machine, so it must not share the process with
//! the rest of the integration suite: cargo runs test binaries one after another (this one before
//! `it`, by name) and tests inside a binary in parallel, so here it has the machine to itself. It
//! compiles only the harness both binaries share (`tests/harness`), not `tests/it`'s own.

#[path = "../harness/mod.rs"]
mod harness;
mod scenarios;
