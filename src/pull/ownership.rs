//! Endpoint ownership when several `botpipe run` processes share one Redis: each endpoint is
//! pulled by the one process holding its lease ([`crate::queue::EndpointLeases`]). Against a
//! legacy collector this is what keeps data: its confirm is positional ("mark the N oldest
//! unpulled"), so two processes confirming the same pull would mark records nobody received.
//!
//! Two parts share one [`EndpointOwnership`] per endpoint:
//! - the [`LeaseKeeper`], one task per process, runs a round every third of the TTL: heartbeat,
//!   renew held leases, notice lost ones, and balance (take free endpoints up to a fair share,
//!   give surplus back). It is the only place that takes or gives up a lease, and on taking one
//!   it reads the endpoint's shared cursor for the puller to resume from. It runs off the pull
//!   path: on the main runtime, on a Redis link of its own (`App` gives it
//!   [`EndpointLeases::with_own_link`]), so a round stuck on a hanging Redis holds neither the
//!   pull thread nor the pullers' connection;
//! - the puller asks [`EndpointOwnership::gate`] at each tick (no I/O), holds the endpoint's
//!   cycle lock for the whole cycle ([`EndpointOwnership::begin_cycle`], which never waits), and
//!   just before the confirm spends its one Redis round trip on
//!   [`EndpointOwnership::check_before_confirm`], which renews the lease and says whether it is
//!   still ours. That round trip gets what is left of the hand-off's deadline (hand-off and check
//!   together wait on Redis for at most one deadline) and is skipped while the hand-off bypasses
//!   Redis. The cursor is then written fenced by the same lease value.
//!
//! Clocks: the keeper records, per lease, the monotonic instant its last successful renewal was
//! *sent* plus the TTL: Redis cannot have expired the lease before then. While Redis does not
//! answer, a holder keeps pulling until that instant less [`safety_margin`], and confirms only
//! when the confirm's own timeout still fits; after that its ticks are skipped and counted as
//! `lease_lost`. The collector keeps what is not confirmed, so pausing loses nothing.
//!
//! What fencing does not cover: a process frozen (SIGSTOP, a VM pause) between its successful
//! check and its confirm for longer than the TTL could still confirm late. The confirm follows
//! the check within one HTTP request, whose timeout is at most half the TTL (config rule).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::status::{LeaseOwner, StatusBoard};
use crate::queue::{Acquire, Cursor, EndpointLeases, Fence, LeaseInfo, Member};
use crate::telemetry::metrics as m;

/// Rounds an endpoint this process released is not taken back by it, so that a balancing
/// release goes to the process that needs it.
const RELEASE_COOLDOWN_ROUNDS: u32 = 2;
/// Rounds an endpoint must have been seen free before a process at or above its fair share takes
/// it anyway (so that an endpoint no one else can pull is not left alone forever).
const ORPHAN_ROUNDS: u32 = 3;

/// How much earlier than the TTL a holder stops trusting its lease by its own clock: a tenth of
/// the TTL, for clock-rate differences and scheduling delay.
pub fn safety_margin(ttl: Duration) -> Duration {
    ttl / 10
}

/// How often the keeper runs a round: a third of the TTL, so a lease survives two failed
/// renewals.
pub fn round_period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(50))
}

/// What the gate says at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The lease is ours and valid: pull.
    Pull,
    /// Another process holds the endpoint, or nobody yet: skip quietly.
    NotHeld,
    /// It was ours, but Redis has not confirmed it for too long by our clock: skip, counted as
    /// `lease_lost`.
    Expired,
}

/// Why a confirm is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLoss {
    /// Redis says another process holds the lease, or it expired there.
    Taken,
    /// Redis did not answer and the lease may have expired by our clock.
    Expired,
}

impl std::fmt::Display for LeaseLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Taken => "is held by another process or expired",
            Self::Expired => "could not be confirmed with Redis before it may have expired",
        })
    }
}

impl LeaseLoss {
    /// Every loss, for registering their counters.
    pub const ALL: [Self; 2] = [Self::Taken, Self::Expired];

    /// Label for `botpipe_pull_lease_losses_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Taken => "taken",
            Self::Expired => "expired",
        }
    }
}

/// What the pre-confirm check found ([`EndpointOwnership::check_before_confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCheck {
    /// `Ok` when the confirm may go ahead.
    pub verdict: Result<(), LeaseLoss>,
    /// Redis did not answer within the time it was given: the caller's hand-off should stop
    /// trying Redis for now (its bypass), as after a hand-off that timed out.
    pub timed_out: bool,
}

/// Where a puller resumes after its process took the endpoint: the shared cursor as the keeper
/// read it right after the acquisition (so taking an endpoint over costs the pull path no Redis
/// round trip). The previous holder cannot move it after that instant (the cursor write is
/// fenced), so it is the cursor to go on from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The shared cursor (`None`: the endpoint has none yet).
    From(Option<Cursor>),
    /// It could not be read: the puller goes on from its own (a stale cursor only re-pulls
    /// records the collector still has; the store absorbs duplicates).
    Unknown,
}

#[derive(Debug)]
struct LeaseState {
    fence: Option<Fence>,
    /// Where the puller resumes under `fence`.
    resume: Resume,
    /// Redis cannot have expired `fence` before this instant.
    expires: Instant,
    /// The keeper is giving the lease back: no new cycle may start.
    releasing: bool,
}

#[derive(Debug)]
struct Shared {
    endpoint: String,
    leases: EndpointLeases,
    state: Mutex<LeaseState>,
    /// Held by the puller for a whole cycle; the keeper takes it before releasing.
    cycle: Arc<tokio::sync::Mutex<()>>,
    /// The longest a confirm can take (the endpoint's request timeout).
    confirm_budget: Duration,
    /// Bound on a release (the keeper's, off the pull path).
    release_deadline: Duration,
    board: StatusBoard,
}

/// One endpoint's lease as seen by this process. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct EndpointOwnership {
    shared: Arc<Shared>,
}

/// A cycle in progress: holds the endpoint's cycle lock and the lease it started under.
#[derive(Debug)]
pub struct CycleGuard {
    fence: Fence,
    resume: Resume,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl CycleGuard {
    /// The lease this cycle runs under.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Where to resume when the lease's token is new to the puller.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }
}

impl EndpointOwnership {
    /// Ownership of `endpoint` through `leases` (the pullers' link: the pre-confirm check runs
    /// on it); `confirm_budget` is the endpoint's request timeout and `release_deadline` bounds
    /// the keeper's release of the lease (at least 500 ms).
    pub fn new(
        endpoint: &str,
        leases: EndpointLeases,
        confirm_budget: Duration,
        release_deadline: Duration,
        board: StatusBoard,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                endpoint: endpoint.to_owned(),
                leases,
                state: Mutex::new(LeaseState {
                    fence: None,
                    resume: Resume::Unknown,
                    expires: Instant::now(),
                    releasing: false,
                }),
                cycle: Arc::new(tokio::sync::Mutex::new(())),
                confirm_budget,
                release_deadline,
                board,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        // Every update is a plain assignment; a panic cannot leave it half-written.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    fn margin(&self) -> Duration {
        safety_margin(self.shared.leases.ttl())
    }

    /// Whether a tick may pull now, by local state only (no I/O).
    pub fn gate(&self) -> Gate {
        let st = self.lock();
        match &st.fence {
            None => Gate::NotHeld,
            Some(_) if st.releasing => Gate::NotHeld,
            Some(_) if Instant::now() + self.margin() >= st.expires => Gate::Expired,
            Some(_) => Gate::Pull,
        }
    }

    /// The current lease, if held.
    pub fn fence(&self) -> Option<Fence> {
        self.lock().fence.clone()
    }

    /// Starts a cycle: takes the cycle lock and returns the lease to run under, or `None` when
    /// the gate is closed. Never waits: the only other holder of the lock is the keeper giving
    /// the lease back, and then no cycle may start anyway.
    pub fn begin_cycle(&self) -> Option<CycleGuard> {
        let lock = Arc::clone(&self.shared.cycle).try_lock_owned().ok()?;
        if self.gate() != Gate::Pull {
            return None;
        }
        let st = self.lock();
        let fence = st.fence.clone()?;
        let resume = st.resume.clone();
        drop(st);
        Some(CycleGuard {
            fence,
            resume,
            _lock: lock,
        })
    }

    /// The pull path's one Redis round trip, just before the confirm: renews the lease if it is
    /// still `fence`, waiting at most `within`: what is left of the hand-off's deadline, so that
    /// the hand-off and this check together wait on Redis for at most one deadline. `None`
    /// skips the round trip: Redis is already known not to answer in time (the hand-off
    /// bypasses it), so an outage costs one slow cycle, not one per tick. Without an answer the
    /// confirm is allowed only if it can finish before the lease could expire by our clock.
    pub async fn check_before_confirm(
        &self,
        fence: &Fence,
        within: Option<Duration>,
    ) -> LeaseCheck {
        let sent = Instant::now();
        let mut timed_out = false;
        // `None`: no answer (skipped, failed or too late).
        let answer = match within {
            None => None,
            Some(within) => {
                match tokio::time::timeout(within, self.shared.leases.renew(fence)).await {
                    Ok(Ok(held)) => Some(held),
                    Ok(Err(error)) => {
                        timed_out = matches!(error, crate::queue::QueueError::Timeout { .. });
                        tracing::debug!(endpoint = %self.endpoint(), %error, "The pre-confirm lease check failed; the lease is judged by this process's clock.");
                        None
                    }
                    Err(_) => {
                        timed_out = true;
                        None
                    }
                }
            }
        };
        let verdict = match answer {
            Some(true) => {
                self.renewed(fence, sent);
                Ok(())
            }
            Some(false) => {
                self.lost(fence, LeaseLoss::Taken);
                Err(LeaseLoss::Taken)
            }
            None => {
                let expires = self.lock().expires;
                if Instant::now() + self.shared.confirm_budget + self.margin() < expires {
                    Ok(())
                } else {
                    Err(LeaseLoss::Expired)
                }
            }
        };
        LeaseCheck { verdict, timed_out }
    }

    fn renewed(&self, fence: &Fence, sent: Instant) {
        let mut st = self.lock();
        if st.fence.as_ref() == Some(fence) {
            st.expires = st.expires.max(sent + self.shared.leases.ttl());
        }
    }

    fn won(&self, fence: Fence, sent: Instant, resume: Resume) {
        let owner = owner_of(&fence.info, true);
        {
            let mut st = self.lock();
            st.fence = Some(fence);
            st.resume = resume;
            st.expires = sent + self.shared.leases.ttl();
            st.releasing = false;
        }
        metrics::counter!(m::PULL_LEASE_ACQUISITIONS_TOTAL, "endpoint" => self.endpoint().to_owned())
            .increment(1);
        self.shared
            .board
            .update(self.endpoint(), |s| s.owner = Some(owner));
    }

    /// Forgets `fence` if it is still the current lease; true when it was.
    fn lost(&self, fence: &Fence, reason: LeaseLoss) -> bool {
        let was_current = {
            let mut st = self.lock();
            if st.fence.as_ref() == Some(fence) {
                st.fence = None;
                true
            } else {
                false
            }
        };
        if was_current {
            metrics::counter!(m::PULL_LEASE_LOSSES_TOTAL, "endpoint" => self.endpoint().to_owned(), "reason" => reason.as_str())
                .increment(1);
            tracing::warn!(endpoint = %self.endpoint(), token = fence.token(), reason = reason.as_str(), "Lost the endpoint's lease; not pulling it until this process holds it again.");
        }
        was_current
    }

    /// Gives the lease back through `via` (the keeper's link): waits for a cycle in flight to
    /// finish, forgets the lease, then deletes it in Redis (bounded), so another process can take
    /// it without waiting for the TTL. The cycle lock is held only while forgetting: a cycle
    /// cannot start under a forgotten lease, and a tick never waits on this Redis call.
    async fn release(&self, via: &EndpointLeases) {
        let Some(fence) = ({
            let mut st = self.lock();
            st.releasing = true;
            st.fence.clone()
        }) else {
            self.lock().releasing = false;
            return;
        };
        {
            let _cycle = self.shared.cycle.lock().await;
            let mut st = self.lock();
            st.fence = None;
            st.releasing = false;
        }
        let released = tokio::time::timeout(
            self.shared.release_deadline.max(Duration::from_millis(500)),
            via.release(&fence),
        )
        .await;
        match released {
            Ok(Ok(_)) => {
                metrics::counter!(m::PULL_LEASE_RELEASES_TOTAL, "endpoint" => self.endpoint().to_owned())
                    .increment(1);
                tracing::info!(endpoint = %self.endpoint(), token = fence.token(), "Released the endpoint's lease.");
            }
            Ok(Err(error)) => {
                tracing::warn!(endpoint = %self.endpoint(), %error, "Could not release the endpoint's lease; it expires by itself.");
            }
            Err(_) => {
                tracing::warn!(endpoint = %self.endpoint(), "Releasing the endpoint's lease timed out; it expires by itself.");
            }
        }
        self.shared
            .board
            .update(self.endpoint(), |s| s.owner = None);
    }

    fn observe(&self, current: Option<&LeaseInfo>) {
        let me = &self.shared.leases.holder().instance;
        let owner = current.map(|i| owner_of(i, &i.holder.instance == me));
        self.shared
            .board
            .update(self.endpoint(), |s| s.owner = owner);
    }
}

fn owner_of(info: &LeaseInfo, this_process: bool) -> LeaseOwner {
    LeaseOwner {
        name: info.holder.name.clone(),
        host: info.holder.host.clone(),
        pid: info.holder.pid,
        since: info.since,
        token: info.token,
        this_process,
    }
}

/// What one round decided, by index into the keeper's endpoints.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held endpoints to give back.
    pub release: Vec<usize>,
    /// Free endpoints to try to take, in order.
    pub acquire: Vec<usize>,
}

/// The balance rule, pure. With `e` endpoints and `n` live processes the fair share is
/// `lo = e / n` to `hi = ceil(e / n)`:
/// - holding more than `hi` (a process joined): give the surplus back;
/// - holding `hi` while another process holds two fewer: the largest holder with the smallest
///   instance id gives one back (one process per round, so two do not both let go);
/// - otherwise take free endpoints while below `hi`; an endpoint free for [`ORPHAN_ROUNDS`]
///   rounds is taken even above it.
///
/// `held` and `free` are endpoint indices; `free` pairs each with the rounds it has been seen
/// free, and comes in the order to try.
pub fn plan(
    me: &str,
    members: &[Member],
    endpoints: usize,
    held: &[usize],
    free: &[(usize, u32)],
) -> Plan {
    let n = members.len().max(1);
    let (lo, hi) = (endpoints / n, endpoints.div_ceil(n));
    let mut out = Plan::default();
    if held.len() > hi {
        out.release = held.iter().rev().take(held.len() - hi).copied().collect();
        return out;
    }
    let others_min = members
        .iter()
        .filter(|m| m.holder.instance != me)
        .map(|m| m.held)
        .min();
    if held.len() == hi && hi > lo && others_min.is_some_and(|min| min + 2 <= held.len()) {
        let max = members
            .iter()
            .map(|m| m.held)
            .max()
            .unwrap_or(0)
            .max(held.len());
        let first_of_largest = members
            .iter()
            .filter(|m| m.held == max || m.holder.instance == me)
            .map(|m| m.holder.instance.as_str())
            .min();
        if held.len() == max && first_of_largest == Some(me) {
            out.release = held.iter().rev().take(1).copied().collect();
            return out;
        }
    }
    let mut count = held.len();
    for &(i, rounds) in free {
        if count < hi || rounds >= ORPHAN_ROUNDS {
            out.acquire.push(i);
            count += 1;
        }
    }
    out
}

/// This process's side of endpoint ownership: heartbeat, renewals, balance. One per process.
#[derive(Debug)]
pub struct LeaseKeeper {
    leases: EndpointLeases,
    endpoints: Vec<EndpointOwnership>,
    /// Per endpoint: rounds seen free in a row.
    free_rounds: HashMap<String, u32>,
    /// Per endpoint: rounds left before this process may take it back after releasing it.
    cooldown: HashMap<String, u32>,
    /// Whether the last round reached Redis, to log on change only.
    reachable: Option<bool>,
}

impl LeaseKeeper {
    /// A keeper for `endpoints` (each built on `leases` or a handle of it).
    pub fn new(leases: EndpointLeases, endpoints: Vec<EndpointOwnership>) -> Self {
        Self {
            leases,
            endpoints,
            free_rounds: HashMap::new(),
            cooldown: HashMap::new(),
            reachable: None,
        }
    }

    fn held(&self) -> Vec<usize> {
        (0..self.endpoints.len())
            .filter(|&i| self.endpoints[i].fence().is_some())
            .collect()
    }

    /// The shared cursor of `endpoint`, read right after taking its lease (bounded: a round
    /// must not hang on it). Here, not in the puller, so that a takeover costs the pull path no
    /// Redis round trip.
    async fn shared_cursor(&self, endpoint: &str) -> Resume {
        let bound = round_period(self.leases.ttl());
        match tokio::time::timeout(bound, self.leases.load_cursor(endpoint)).await {
            Ok(Ok(cursor)) => Resume::From(cursor),
            Ok(Err(error)) => {
                tracing::warn!(endpoint, %error, "Could not load the shared cursor after taking the endpoint; its puller goes on from its own.");
                Resume::Unknown
            }
            Err(_) => {
                tracing::warn!(endpoint, "Loading the shared cursor after taking the endpoint timed out; its puller goes on from its own.");
                Resume::Unknown
            }
        }
    }

    /// One round: heartbeat and renewals in one round trip, then at most one release or a few
    /// acquisitions.
    pub async fn try_round_one(&mut self) {
        let names: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.endpoint().to_owned())
            .collect();
        let mine: Vec<Option<Fence>> = self
            .endpoints
            .iter()
            .map(EndpointOwnership::fence)
            .collect();
        let refs: Vec<Option<&Fence>> = mine.iter().map(Option::as_ref).collect();
        let held_before = mine.iter().flatten().count();
        let sent = Instant::now();
        let round = match self.leases.round(&names, &refs, held_before).await {
            Ok(r) => r,
            Err(error) => {
                if self.reachable != Some(false) {
                    tracing::warn!(%error, "Lease round failed: Redis does not answer. Held endpoints are pulled until their leases would expire by this process's clock.");
                }
                self.reachable = Some(false);
                return;
            }
        };
        if self.reachable == Some(false) {
            tracing::info!("Lease rounds reach Redis again.");
        }
        self.reachable = Some(true);

        let mut free = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let current = round.leases.get(i).cloned().flatten();
            let info = current.as_deref().and_then(LeaseInfo::parse);
            if let Some(f) = &mine[i] {
                if current.as_deref() == Some(f.value.as_str()) {
                    ep.renewed(f, sent);
                } else {
                    ep.lost(f, LeaseLoss::Taken);
                }
            }
            ep.observe(info.as_ref());
            let rounds = self.free_rounds.entry(names[i].clone()).or_insert(0);
            if current.is_none() {
                *rounds += 1;
                let cooling = self.cooldown.get(&names[i]).copied().unwrap_or(0) > 0;
                if !cooling {
                    free.push((i, *rounds));
                }
            } else {
                *rounds = 0;
            }
        }
        for left in self.cooldown.values_mut() {
            *left = left.saturating_sub(1);
        }
        free.shuffle(&mut rand::rng());

        let held = self.held();
        let me = self.leases.holder().instance.clone();
        let mut members = round.members;
        if !members.iter().any(|m| m.holder.instance == me) {
            members.push(Member {
                holder: self.leases.holder().clone(),
                held: held.len(),
            });
        }
        let plan = plan(&me, &members, self.endpoints.len(), &held, &free);
        for i in plan.release {
            tracing::info!(endpoint = %names[i], live_processes = members.len(), "Giving an endpoint back to balance the processes.");
            self.endpoints[i].release(&self.leases).await;
            self.cooldown
                .insert(names[i].clone(), RELEASE_COOLDOWN_ROUNDS);
        }
        for i in plan.acquire {
            let sent = Instant::now();
            match self.leases.try_acquire(&names[i]).await {
                Ok(Acquire::Won(fence)) => {
                    tracing::info!(endpoint = %names[i], token = fence.token(), "Acquired the endpoint's lease.");
                    let resume = self.shared_cursor(&names[i]).await;
                    self.endpoints[i].won(fence, sent, resume);
                    self.free_rounds.insert(names[i].clone(), 0);
                }
                Ok(Acquire::Held(info)) => self.endpoints[i].observe(info.as_ref()),
                Err(error) => {
                    tracing::debug!(endpoint = %names[i], %error, "Could not try to acquire the endpoint's lease.");
                    break;
                }
            }
        }
        metrics::gauge!(m::PULL_ENDPOINTS_HELD).set(self.held().len() as f64);
    }

    /// Runs rounds every third of the TTL until `token` is cancelled, then releases every held
    /// lease and removes the heartbeat. Cancel it only after the pullers stopped.
    pub async fn run_until_stopped(mut self, token: CancellationToken) {
        let period = round_period(self.leases.ttl());
        tracing::info!(
            process = %self.leases.holder().name,
            endpoints = self.endpoints.len(),
            ttl_ms = self.leases.ttl().as_millis() as u64,
            "Lease keeper started."
        );
        loop {
            // The round is not raced against the token: it is bounded by command timeouts, and
            // finishing it keeps the state consistent for the releases below.
            self.try_round_one().await;
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        for ep in &self.endpoints {
            ep.release(&self.leases).await;
        }
        metrics::gauge!(m::PULL_ENDPOINTS_HELD).set(0.0);
        if let Err(error) = tokio::time::timeout(Duration::from_secs(1), self.leases.leave())
            .await
            .unwrap_or(Ok(()))
        {
            tracing::debug!(%error, "Could not remove this process's heartbeat; it expires by itself.");
        }
        tracing::info!("Lease keeper stopped; leases released.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Holder;

    fn member(id: &str, held: usize) -> Member {
        Member {
            holder: Holder {
                instance: id.into(),
                name: id.into(),
                host: "h".into(),
                pid: 1,
            },
            held,
        }
    }

    fn free(ids: &[usize], rounds: u32) -> Vec<(usize, u32)> {
        ids.iter().map(|&i| (i, rounds)).collect()
    }

    #[test]
    fn a_lone_process_takes_every_endpoint() {
        let p = plan(
            "a",
            &[member("a", 0)],
            10,
            &[],
            &free(&(0..10).collect::<Vec<_>>(), 1),
        );
        assert_eq!(p.acquire.len(), 10);
        assert!(p.release.is_empty());
    }

    #[test]
    fn three_processes_take_at_most_ceil_each() {
        let ms = [member("a", 0), member("b", 0), member("c", 0)];
        let p = plan("a", &ms, 10, &[], &free(&(0..10).collect::<Vec<_>>(), 1));
        assert_eq!(p.acquire.len(), 4);
    }

    #[test]
    fn a_surplus_is_given_back_when_a_process_joins() {
        let ms = [member("a", 10), member("b", 0)];
        let held: Vec<usize> = (0..10).collect();
        let p = plan("a", &ms, 10, &held, &[]);
        assert_eq!(p.release.len(), 5);
        let p = plan("b", &ms, 10, &[], &[]);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn four_four_two_becomes_four_three_three_with_one_release() {
        let ms = [member("a", 4), member("b", 4), member("c", 2)];
        let a = plan("a", &ms, 10, &[0, 1, 2, 3], &[]);
        let b = plan("b", &ms, 10, &[4, 5, 6, 7], &[]);
        assert_eq!(
            a.release.len(),
            1,
            "the first of the largest gives one back"
        );
        assert!(b.release.is_empty(), "only one process lets go per round");
        let c = plan("c", &ms, 10, &[8, 9], &free(&[3], 1));
        assert_eq!(c.acquire, vec![3]);
    }

    #[test]
    fn a_balanced_spread_stays_put() {
        let ms = [member("a", 4), member("b", 3), member("c", 3)];
        for (me, held) in [
            ("a", vec![0, 1, 2, 3]),
            ("b", vec![4, 5, 6]),
            ("c", vec![7, 8, 9]),
        ] {
            assert_eq!(plan(me, &ms, 10, &held, &[]), Plan::default(), "{me}");
        }
    }

    #[test]
    fn an_orphan_is_taken_even_above_the_share() {
        let ms = [member("a", 5), member("b", 5)];
        let held: Vec<usize> = (0..5).collect();
        assert!(plan("a", &ms, 10, &held, &free(&[9], 1)).acquire.is_empty());
        assert_eq!(
            plan("a", &ms, 10, &held, &free(&[9], ORPHAN_ROUNDS)).acquire,
            vec![9]
        );
    }

    #[test]
    fn survivors_of_a_death_share_the_orphans() {
        // c died: its heartbeat expired, its four endpoints are free.
        let ms = [member("a", 3), member("b", 3)];
        let p = plan("a", &ms, 10, &[0, 1, 2], &free(&[6, 7, 8, 9], 1));
        assert_eq!(p.acquire.len(), 2);
    }
}
