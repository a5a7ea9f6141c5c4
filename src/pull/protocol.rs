//! One pull cycle, step by step as in `docs/pull-protocol.md`:
//! 1. `GET /api/pull?since_seq=<cursor>`;
//! 2. reset detection (epoch changed, or cursor above `global_max_seq_id`);
//! 3. validation into records and dead letters;
//! 4. durable hand-off of the whole batch (queue, or spool);
//! 5. only then `POST /api/confirm {count, up_to_seq}`;
//! 6. on a 200, advance the cursor and persist it.
//!
//! A failure at any step leaves the cursor where it was: the collector keeps the records and
//! returns them on the next pull, and the idempotent store absorbs any duplicate. The cycle
//! awaits nothing downstream but the deadline-bounded hand-off.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::queue::{Cursor, Fence, Handoff, HandoffTarget, QueueError};
use crate::record::{parse_batch, BatchId, RecordContext};
use crate::telemetry::metrics as m;
use crate::telemetry::Chain;

use super::client::{ClientError, PullClient, PullResponse};
use super::ownership::{EndpointOwnership, Gate, LeaseLoss, Resume};
use super::status::StatusBoard;

/// What one cycle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    /// Records were handed off and confirmed; `full` when the batch hit the limit (a backlog).
    Confirmed {
        /// Records in the response.
        count: usize,
        /// `count == batch_size`.
        full: bool,
        /// Where the batch went.
        target: HandoffTarget,
    },
    /// The collector had nothing new.
    Empty,
    /// The collector was reset; the cursor was dropped and the next pull starts over.
    Reset,
    /// The request or the response failed; nothing was confirmed.
    PullFailed,
    /// The batch could not be made durable; nothing was confirmed.
    HandoffFailed,
    /// Handed off but the confirm failed; the records will come back and be deduplicated.
    ConfirmFailed,
    /// Handed off but not confirmed: this process's lease on the endpoint was lost (another
    /// process took it, or Redis could not confirm it in time). The holder pulls them again.
    LeaseLost,
    /// Nothing done: another process holds the endpoint (or nobody does yet).
    NotOwner,
}

impl PullOutcome {
    /// The label of this outcome in the one vocabulary ([`PullOutcomeLabel`]); `None` for a
    /// failed request, whose label depends on the error ([`ClientError::outcome`]), and for
    /// [`PullOutcome::NotOwner`], which is not a pull at all (nothing counted or shown).
    pub fn label(self) -> Option<PullOutcomeLabel> {
        match self {
            Self::Confirmed { .. } => Some(PullOutcomeLabel::Ok),
            Self::Empty => Some(PullOutcomeLabel::Empty),
            Self::Reset => Some(PullOutcomeLabel::Reset),
            Self::HandoffFailed => Some(PullOutcomeLabel::HandoffFailed),
            Self::ConfirmFailed => Some(PullOutcomeLabel::ConfirmFailed),
            Self::LeaseLost => Some(PullOutcomeLabel::LeaseLost),
            Self::PullFailed | Self::NotOwner => None,
        }
    }

    /// Whether the cycle failed (the cursor stayed where it was and nothing was confirmed).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::PullFailed | Self::HandoffFailed | Self::ConfirmFailed | Self::LeaseLost
        )
    }
}

/// The one vocabulary of a pull cycle's outcome: the `outcome` label of `botpipe_pulls_total`,
/// and the `last_outcome` that `/api/status` and `botpipe status` show per endpoint. Both take
/// it from here, so a dashboard and the status never name the same outcome differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullOutcomeLabel {
    /// Records were handed off and confirmed.
    Ok,
    /// The collector had nothing new.
    Empty,
    /// The collector was reset; the cursor was dropped.
    Reset,
    /// The batch could not be made durable; nothing was confirmed.
    HandoffFailed,
    /// Handed off, but the confirm failed.
    ConfirmFailed,
    /// Handed off, but the lease on the endpoint was lost before the confirm.
    LeaseLost,
    /// The request timed out.
    Timeout,
    /// The request could not be sent or its answer not read (connection, TLS).
    HttpError,
    /// The collector refused the API key (HTTP 401 or 403).
    Auth,
    /// The collector answered another non-success status.
    HttpStatus,
    /// The response exceeded `max_body_bytes`.
    BodyTooLarge,
    /// The response is not a pull response.
    InvalidJson,
    /// The collector answered `success: false`.
    Refused,
}

impl PullOutcomeLabel {
    /// Every label, in the order `docs/metrics.md` lists them.
    pub const ALL: [Self; 13] = [
        Self::Ok,
        Self::Empty,
        Self::Reset,
        Self::HandoffFailed,
        Self::ConfirmFailed,
        Self::LeaseLost,
        Self::Timeout,
        Self::HttpError,
        Self::Auth,
        Self::HttpStatus,
        Self::BodyTooLarge,
        Self::InvalidJson,
        Self::Refused,
    ];

    /// The label's text, as in the metric and the status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Empty => "empty",
            Self::Reset => "reset",
            Self::HandoffFailed => "handoff_failed",
            Self::ConfirmFailed => "confirm_failed",
            Self::LeaseLost => "lease_lost",
            Self::Timeout => "timeout",
            Self::HttpError => "http_error",
            Self::Auth => "auth",
            Self::HttpStatus => "http_status",
            Self::BodyTooLarge => "body_too_large",
            Self::InvalidJson => "invalid_json",
            Self::Refused => "refused",
        }
    }

    /// Whether a cycle with this outcome failed (counts towards `consecutive_failures`).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::Empty | Self::Reset)
    }
}

impl std::fmt::Display for PullOutcomeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Records the collector holds above `cursor`, from what `resp` says: `global_max_seq_id - cursor`
/// when it reports its largest seq, otherwise (legacy collectors) its count of unconfirmed
/// records less the `confirmed` ones just confirmed out of this response; `None` when it says
/// neither.
fn lag_of(resp: &PullResponse<'_>, cursor: u64, confirmed: u64) -> Option<u64> {
    match resp.global_max_seq_id {
        Some(global) => Some(global.saturating_sub(cursor)),
        None => resp
            .stats
            .as_ref()
            .and_then(|s| s.unpulled())
            .map(|n| n.saturating_sub(confirmed)),
    }
}

/// Why a confirm was withheld: the lease on the endpoint is not (provably) ours.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {endpoint}: lease (token {token}) {loss}")]
pub struct LeaseLostError {
    /// The endpoint.
    pub endpoint: String,
    /// The token the cycle ran under.
    pub token: u64,
    /// What happened.
    pub loss: LeaseLoss,
}

/// The state of one endpoint's protocol: its client, cursor and hand-off.
#[derive(Debug)]
pub struct Puller {
    name: String,
    client: PullClient,
    ctx: RecordContext,
    handoff: Handoff,
    cursor: Option<Cursor>,
    batch_size: usize,
    board: StatusBoard,
    /// How late the current tick started, for the per-pull log line.
    tick_drift: Duration,
    /// True while cycles fail, so a dead collector logs on the change, not on every tick.
    failing: bool,
    /// The endpoint's lease, when several processes share the endpoints (Redis backend).
    ownership: Option<EndpointOwnership>,
    /// The lease the current cycle runs under: fences the confirm and the cursor write.
    fence: Option<Fence>,
    /// The fencing token the in-memory cursor was loaded under; a new token (this process took
    /// the endpoint, possibly over from another) reloads the shared cursor first.
    cursor_token: Option<u64>,
}

impl Puller {
    /// A puller starting from `cursor` (as loaded from the cursor store).
    pub fn new(
        client: PullClient,
        ctx: RecordContext,
        handoff: Handoff,
        cursor: Option<Cursor>,
        batch_size: u32,
        board: StatusBoard,
    ) -> Self {
        let name = ctx.source.clone();
        board.update(&name, |s| {
            s.cursor = cursor.as_ref().map(|c| c.seq);
            s.epoch = cursor.as_ref().and_then(|c| c.epoch.clone());
        });
        Self {
            name,
            client,
            ctx,
            handoff,
            cursor,
            batch_size: batch_size as usize,
            board,
            tick_drift: Duration::ZERO,
            failing: false,
            ownership: None,
            fence: None,
            cursor_token: None,
        }
    }

    /// Pulls only while this process holds the endpoint's lease (see [`super::ownership`]).
    #[must_use]
    pub fn with_ownership(mut self, ownership: EndpointOwnership) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// Whether a tick may start a cycle, by local state only. A held lease that Redis has not
    /// confirmed for too long counts the tick as `lease_lost`.
    pub fn may_pull(&self) -> bool {
        let Some(o) = &self.ownership else {
            return true;
        };
        match o.gate() {
            Gate::Pull => true,
            Gate::NotHeld => false,
            Gate::Expired => {
                metrics::counter!(m::PULL_LEASE_LOST_TICKS_TOTAL, "endpoint" => self.name.clone())
                    .increment(1);
                self.board
                    .update(&self.name, |s| *s.lease_lost_ticks.get_or_insert(0) += 1);
                false
            }
        }
    }

    /// After taking the endpoint under a new token: resume from the shared cursor, which the
    /// previous holder moved and the keeper read when it took the lease (no I/O here). When the
    /// keeper could not read it, the in-memory cursor stays (a stale cursor only re-pulls
    /// records the collector still has; the store absorbs duplicates).
    fn adopt(&mut self, token: u64, resume: &Resume) {
        self.cursor_token = Some(token);
        let Resume::From(cursor) = resume else {
            tracing::info!(endpoint = %self.name, token, cursor = self.cursor.as_ref().map_or(0, |c| c.seq), "Holding the endpoint; the shared cursor could not be read, going on from this process's.");
            return;
        };
        tracing::info!(endpoint = %self.name, token, cursor = cursor.as_ref().map_or(0, |c| c.seq), "Holding the endpoint; resuming from the shared cursor.");
        self.board.update(&self.name, |s| {
            s.cursor = cursor.as_ref().map(|c| c.seq);
            s.epoch = cursor.as_ref().and_then(|c| c.epoch.clone());
        });
        self.cursor = cursor.clone();
    }

    /// Records how late the current tick started; the next pulls log it.
    pub fn set_tick_drift(&mut self, drift: Duration) {
        self.tick_drift = drift;
    }

    /// The endpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The confirmed cursor.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// Logs a failed cycle (once per run of failures at warn or error, then at debug) and
    /// shows it on the board under `label`, the outcome's name in the one vocabulary.
    fn failed(
        &mut self,
        outcome: PullOutcome,
        label: PullOutcomeLabel,
        error: &(dyn std::error::Error + 'static),
    ) -> PullOutcome {
        if !self.failing {
            self.failing = true;
            let message = match outcome {
                PullOutcome::HandoffFailed => "Batch not durable; not confirming (the collector keeps it). Further failures of this endpoint log at debug until it recovers.",
                PullOutcome::ConfirmFailed => "Confirm failed; the records will be pulled again and deduplicated. Further failures of this endpoint log at debug until it recovers.",
                PullOutcome::LeaseLost => "Lease on the endpoint lost before the confirm; not confirming (the holder pulls the records again). Further failures of this endpoint log at debug until it recovers.",
                _ => "Pull failed. Further failures of this endpoint log at debug until it recovers.",
            };
            if outcome == PullOutcome::HandoffFailed {
                tracing::error!(endpoint = %self.name, outcome = label.as_str(), error = %Chain(error), "{message}");
            } else {
                tracing::warn!(endpoint = %self.name, outcome = label.as_str(), error = %Chain(error), "{message}");
            }
        } else {
            tracing::debug!(endpoint = %self.name, outcome = label.as_str(), error = %Chain(error), "Pull cycle failed again.");
        }
        self.board.update(&self.name, |s| {
            s.last_outcome = Some(label);
            s.last_error = Some(Chain(error).to_string());
        });
        outcome
    }

    /// Runs one cycle. Never panics and never returns an error: failures are outcomes, logged
    /// and counted here.
    // No span with an `endpoint` field here: every line of the cycle names its endpoint itself,
    // and a span field would print it twice on each of them (`endpoint=west … endpoint=west`).
    pub async fn try_pull_one(&mut self) -> PullOutcome {
        let guard = match &self.ownership {
            None => None,
            Some(o) => match o.begin_cycle() {
                Some(g) => Some(g),
                None => return PullOutcome::NotOwner,
            },
        };
        if let Some(g) = &guard {
            let token = g.fence().token();
            if self.cursor_token != Some(token) {
                self.adopt(token, g.resume());
            }
            self.fence = Some(g.fence().clone());
        }
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let outcome = self.cycle(started).await;
        self.fence = None;
        drop(guard);
        let elapsed = started.elapsed();
        let failed = outcome.is_failure();
        if !failed && self.failing {
            self.failing = false;
            tracing::info!(endpoint = %self.name, "Endpoint recovered: pulls succeed again.");
        }
        metrics::histogram!(m::PULL_DURATION_SECONDS, "endpoint" => self.name.clone())
            .record(elapsed.as_secs_f64());
        // A failed request was counted with its own label by `pull_error`.
        if let Some(label) = outcome.label() {
            metrics::counter!(m::PULLS_TOTAL, "endpoint" => self.name.clone(), "outcome" => label.as_str())
                .increment(1);
        }
        self.board.update(&self.name, |s| {
            *s.pulls.get_or_insert(0) += 1;
            if failed {
                *s.consecutive_failures.get_or_insert(0) += 1;
                s.failing_since.get_or_insert(started_at);
            } else {
                s.consecutive_failures = Some(0);
                s.failing_since = None;
                s.last_outcome = outcome.label();
                s.last_error = None;
            }
        });
        tracing::debug!(
            endpoint = %self.name,
            outcome = ?outcome,
            duration_ms = elapsed.as_millis() as u64,
            "Pull cycle finished."
        );
        outcome
    }

    async fn cycle(&mut self, started: Instant) -> PullOutcome {
        let since = self.cursor.as_ref().map(|c| c.seq).filter(|s| *s > 0);
        let body = match self.client.pull(since).await {
            Ok(b) => b,
            Err(e) => return self.pull_error(&e),
        };
        let resp = match self.client.decode(&body) {
            Ok(r) => r,
            Err(e) => return self.pull_error(&e),
        };

        // Step 2: reset detection.
        if let Some(cur) = &self.cursor {
            let epoch_changed = matches!((&cur.epoch, &resp.epoch), (Some(a), Some(b)) if a != b);
            let seq_above_global = resp.global_max_seq_id.is_some_and(|g| cur.seq > g);
            // Legacy collectors without epoch or global_max_seq_id: nothing above the cursor, yet
            // the cache says it holds unconfirmed records. Since the cursor only moves past
            // confirmed records, those must sit below it: the seq restarted.
            let unpulled_below_cursor = cur.seq > 0
                && resp.items().is_empty()
                && resp.epoch.is_none()
                && resp.global_max_seq_id.is_none()
                && resp
                    .stats
                    .as_ref()
                    .and_then(|s| s.unpulled())
                    .is_some_and(|n| n > 0);
            if epoch_changed || seq_above_global || unpulled_below_cursor {
                tracing::warn!(
                    endpoint = %self.name,
                    cursor = cur.seq,
                    old_epoch = cur.epoch.as_deref().unwrap_or(""),
                    new_epoch = resp.epoch.as_deref().unwrap_or(""),
                    global_max_seq_id = resp.global_max_seq_id,
                    "Collector was reset; dropping the cursor and pulling from the start."
                );
                metrics::counter!(m::PULL_RESETS_TOTAL, "endpoint" => self.name.clone())
                    .increment(1);
                let fresh = Cursor {
                    epoch: resp.epoch.clone(),
                    seq: 0,
                };
                self.persist_cursor(fresh).await;
                self.show_lag(lag_of(&resp, 0, 0));
                return PullOutcome::Reset;
            }
        }
        let cursor_before = self.cursor.as_ref().map_or(0, |c| c.seq);
        self.show_lag(lag_of(&resp, cursor_before, 0));

        let items = resp.items();
        if items.is_empty() {
            if self.cursor.as_ref().map(|c| &c.epoch) != Some(&resp.epoch) && resp.epoch.is_some() {
                // First contact with an epoch-aware collector: remember its epoch.
                let seq = self.cursor.as_ref().map_or(0, |c| c.seq);
                self.persist_cursor(Cursor {
                    epoch: resp.epoch.clone(),
                    seq,
                })
                .await;
            }
            return PullOutcome::Empty;
        }

        // Step 3: validation.
        let count = items.len();
        let parsed = parse_batch(items, &self.ctx);
        let record_max = parsed
            .records
            .iter()
            .filter_map(|r| r.seq_id)
            .map(|s| s.0)
            .max();
        let up_to = resp.max_seq_id.filter(|m| *m > 0).or(record_max);
        let valid = parsed.records.len();
        let rejected = parsed.dead_letters.len();
        for d in &parsed.dead_letters {
            metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => d.reason.as_str()).increment(1);
        }
        metrics::counter!(m::RECORDS_TOTAL, "stage" => "pull", "outcome" => "valid")
            .increment(valid as u64);
        if rejected > 0 {
            metrics::counter!(m::RECORDS_TOTAL, "stage" => "pull", "outcome" => "rejected")
                .increment(rejected as u64);
        }
        let mut batch = parsed.into_batch(self.name.clone());
        // The same records pulled again (a confirm that failed or timed out) are the same
        // batch: the store keys dead letters by batch and position, so they land once.
        batch.id = BatchId::derived(
            std::iter::once(self.name.as_bytes()).chain(items.iter().map(|r| r.get().as_bytes())),
        );

        // Step 4: durable hand-off.
        let handoff_started = Instant::now();
        let target = match self.handoff.handoff(&batch).await {
            Ok(t) => t,
            Err(e) => {
                return self.failed(
                    PullOutcome::HandoffFailed,
                    PullOutcomeLabel::HandoffFailed,
                    &e,
                )
            }
        };

        // Step 5: confirm, only while the lease is still ours: the pull path's one Redis round
        // trip for the lease, within what the hand-off left of its deadline, and none while
        // the hand-off bypasses Redis.
        if let (Some(o), Some(f)) = (&self.ownership, &self.fence) {
            let within = self.handoff.remaining(handoff_started);
            let check = o.check_before_confirm(f, within).await;
            if check.timed_out {
                self.handoff
                    .redis_timed_out("lease_check", within.unwrap_or_default());
            }
            if let Err(loss) = check.verdict {
                let error = LeaseLostError {
                    endpoint: self.name.clone(),
                    token: f.token(),
                    loss,
                };
                return self.failed(PullOutcome::LeaseLost, PullOutcomeLabel::LeaseLost, &error);
            }
        }
        if let Err(e) = self.client.confirm(count, up_to).await {
            return self.failed(
                PullOutcome::ConfirmFailed,
                PullOutcomeLabel::ConfirmFailed,
                &e,
            );
        }

        // Step 6: advance the cursor.
        if let Some(seq) = up_to {
            let seq = seq.max(self.cursor.as_ref().map_or(0, |c| c.seq));
            self.persist_cursor(Cursor {
                epoch: resp.epoch.clone(),
                seq,
            })
            .await;
        }
        // Lag after this confirm, so a drained endpoint shows 0 without waiting for another pull.
        let cursor_now = self.cursor.as_ref().map_or(0, |c| c.seq);
        self.show_lag(lag_of(&resp, cursor_now, count as u64));
        self.board.record_pulled(&self.name, count as u64);
        self.board.update(&self.name, |s| {
            *s.records_pulled.get_or_insert(0) += count as u64;
            *s.records_rejected.get_or_insert(0) += rejected as u64;
            if target == HandoffTarget::Spool {
                *s.spooled_batches.get_or_insert(0) += 1;
            }
        });
        tracing::info!(
            endpoint = %self.name,
            count,
            valid,
            rejected,
            cursor = self.cursor.as_ref().map_or(0, |c| c.seq),
            durable_in = target.as_str(),
            batch = %batch.id,
            duration_ms = started.elapsed().as_millis() as u64,
            drift_ms = crate::telemetry::millis(self.tick_drift),
            "Pulled batch."
        );
        PullOutcome::Confirmed {
            count,
            full: count >= self.batch_size,
            target,
        }
    }

    /// Shows the endpoint's lag on the board and in `botpipe_pull_lag_records`. An unknown lag
    /// (the collector reports neither `global_max_seq_id` nor its cache statistics) leaves both
    /// as they were: never a made-up 0.
    fn show_lag(&self, lag: Option<u64>) {
        let Some(lag) = lag else { return };
        metrics::gauge!(m::PULL_LAG_RECORDS, "endpoint" => self.name.clone()).set(lag as f64);
        self.board.update(&self.name, |s| s.lag = Some(lag));
    }

    fn pull_error(&mut self, e: &ClientError) -> PullOutcome {
        let label = e.outcome();
        metrics::counter!(m::PULLS_TOTAL, "endpoint" => self.name.clone(), "outcome" => label.as_str())
            .increment(1);
        self.failed(PullOutcome::PullFailed, label, e)
    }

    /// Sets the in-memory cursor and persists it. A failed write is logged: the collector has
    /// confirmed the records either way, and a lost cursor only means re-pulling from an older
    /// seq, which returns nothing already confirmed.
    async fn persist_cursor(&mut self, cursor: Cursor) {
        let saved = self
            .handoff
            .save_cursor_fenced(&self.name, &cursor, self.fence.as_ref())
            .await;
        match saved {
            Ok(()) => {}
            Err(e @ QueueError::Fenced { .. }) => {
                // The lease moved on between the check and this write: the new holder's cursor
                // stands, and at worst it pulls again what the collector still returns.
                tracing::warn!(endpoint = %self.name, error = %e, "Lease moved on before the cursor was saved; leaving the shared cursor to the new holder.");
            }
            Err(e) => {
                tracing::error!(endpoint = %self.name, error = %e, "Could not persist the pull cursor.");
            }
        }
        metrics::gauge!(m::PULL_CURSOR, "endpoint" => self.name.clone()).set(cursor.seq as f64);
        self.board.update(&self.name, |s| {
            s.cursor = Some(cursor.seq);
            s.epoch = cursor.epoch.clone();
        });
        self.cursor = Some(cursor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_16_one_outcome_vocabulary_for_metrics_and_status() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
        )
        .unwrap();
        let row = doc
            .lines()
            .find(|l| l.starts_with("| `botpipe_pulls_total`"))
            .unwrap();
        for label in PullOutcomeLabel::ALL {
            // The status JSON spells it as the metric does.
            assert_eq!(
                serde_json::to_value(label).unwrap(),
                serde_json::Value::String(label.as_str().to_owned())
            );
            assert_eq!(
                serde_json::from_value::<PullOutcomeLabel>(label.as_str().into()).unwrap(),
                label
            );
            assert!(
                row.contains(&format!("`{}`", label.as_str())),
                "docs/metrics.md does not list outcome {label}: {row}"
            );
        }
        assert_eq!(
            PullOutcome::Confirmed {
                count: 1,
                full: false,
                target: HandoffTarget::Queue
            }
            .label(),
            Some(PullOutcomeLabel::Ok)
        );
        assert_eq!(PullOutcome::NotOwner.label(), None);
        assert!(PullOutcome::PullFailed.is_failure() && !PullOutcome::Reset.is_failure());
        assert!(PullOutcomeLabel::Timeout.is_failure() && !PullOutcomeLabel::Empty.is_failure());
    }

    #[test]
    fn lag_is_known_only_when_the_collector_says() {
        let decode = |body: &'static str| serde_json::from_str::<PullResponse<'_>>(body).unwrap();
        // botpipe collectors: global_max_seq_id above the cursor.
        let r = decode(r#"{"data": [], "global_max_seq_id": 120}"#);
        assert_eq!(lag_of(&r, 100, 0), Some(20));
        assert_eq!(lag_of(&r, 130, 0), Some(0));
        // Legacy collectors: their unconfirmed count, less what was just confirmed.
        let r = decode(r#"{"records": [], "stats": {"cached_records": 50, "pulled_records": 20}}"#);
        assert_eq!(lag_of(&r, 7, 0), Some(30));
        assert_eq!(lag_of(&r, 7, 10), Some(20));
        // Neither: unknown, not 0.
        let r = decode(r#"{"success": true, "data": []}"#);
        assert_eq!(lag_of(&r, 7, 0), None);
    }
}
