//! The cadence proof of issue 3, in its own test binary. It measures pull-schedule drift in
//! milliseconds on a 2-core machine, so it must not share the process with the rest of the
//! integration suite (cargo runs test binaries one after another, and tests inside a binary in
//! parallel), so `cargo test` runs it alone, after the rest. It reuses the `it` harness.

#[path = "../it/helpers/mod.rs"]
mod helpers;
mod scenarios;
