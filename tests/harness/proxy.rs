//! A TCP fault proxy for tests: listens on a random local port and forwards to an upstream
//! (Redis, a database), misbehaving on demand, switchable while connections are open.
//!
//! Modes ([`Mode`]):
//! - `Pass`: forwards both ways.
//! - `Refuse`: Redis is dead. Existing connections are cut with a TCP reset; new ones are
//!   accepted and reset at once, which a client sees like a refused connection.
//! - `Hang`: a black hole. New connections are accepted but never connected upstream; bytes on
//!   existing ones are held in both directions. Switching back to `Pass` releases what was held
//!   (a frozen server that thaws, a partition healed before TCP gave up).
//! - `BlackHole`: a black hole that swallows. Every connection open or accepted while it lasts
//!   reads and discards what it is sent, never answers, and stays that way when the mode
//!   changes: the server behind it is gone for those connections (a failover behind the
//!   address, a lost NAT or firewall entry). The proxy still acknowledges at the TCP level, so
//!   only a client-side timeout ever ends a wait on such a connection. Connections accepted
//!   after the mode changed follow the new mode.
//! - `Delay(d)`: every chunk from upstream reaches the client `d` after it arrived (requests go
//!   up at once, so the server acts on them; only its replies are late).
//!
//! [`FaultProxy::reset`] cuts every open connection with a reset and keeps the mode: a server
//! restart as the clients see it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Reset every connection, open or new.
    Refuse,
    /// Accept, but hold every byte.
    Hang,
    /// Deliver each upstream chunk this long after it arrived.
    Delay(Duration),
    /// Accept, swallow every byte, never answer; connections that saw it stay dead.
    BlackHole,
}

/// A running proxy; stops and cuts its connections when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    resets: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` in `Pass` mode.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let (resets, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let ctx = Ctx {
            upstream,
            mode: mode.subscribe(),
            resets: resets.subscribe(),
            stop: stop.clone(),
        };
        let counter = Arc::clone(&accepted);
        tokio::spawn(accept_loop(listener, ctx, counter));
        Self {
            addr,
            mode,
            resets,
            accepted,
            stop,
        }
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://` URL of the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Switches mode; `Refuse` also cuts every open connection.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode == Mode::Refuse {
            self.reset();
        }
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Cuts every open connection with a TCP reset; new ones follow the current mode.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Ctx {
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    resets: watch::Receiver<u64>,
    stop: CancellationToken,
}

async fn accept_loop(listener: TcpListener, ctx: Ctx, accepted: Arc<AtomicU64>) {
    loop {
        let client = tokio::select! {
            () = ctx.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((c, _)) => c,
                Err(_) => continue,
            },
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        // Every proxied socket closes with a reset, so a cut looks like a crash, not a goodbye.
        client.set_zero_linger().ok();
        if *ctx.mode.borrow() == Mode::Refuse {
            drop(client);
            continue;
        }
        tokio::spawn(serve(client, ctx.clone()));
    }
}

/// Resolves when a reset is requested after `seen`, or the proxy stops.
async fn cut(mut resets: watch::Receiver<u64>, seen: u64, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => {}
        _ = resets.wait_for(|n| *n != seen) => {}
    }
}

/// Reads and discards everything `client` sends until it closes: a connection that met a
/// swallowing black hole.
async fn swallow(mut client: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = client.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

async fn serve(client: TcpStream, ctx: Ctx) {
    let seen = *ctx.resets.borrow();
    let cut = cut(ctx.resets.clone(), seen, ctx.stop.clone());
    tokio::pin!(cut);
    // A black hole holds the client without dialling upstream until the mode changes.
    let mut mode = ctx.mode.clone();
    // `None`: drop the client; `Some(None)`: swallow it; `Some(Some(u))`: forward to `u`.
    let ready = async {
        let m = *mode.wait_for(|m| *m != Mode::Hang).await.ok()?;
        match m {
            Mode::Refuse => None,
            Mode::BlackHole => Some(None),
            Mode::Pass | Mode::Hang | Mode::Delay(_) => {
                TcpStream::connect(ctx.upstream).await.ok().map(Some)
            }
        }
    };
    let upstream = tokio::select! {
        () = &mut cut => return,
        u = ready => match u {
            None => return,
            Some(None) => {
                // The losing branch: the swallowing stops with a reset or the proxy.
                tokio::select! {
                    () = &mut cut => {}
                    () = swallow(client) => {}
                }
                return;
            }
            Some(Some(u)) => u,
        },
    };
    upstream.set_zero_linger().ok();
    client.set_nodelay(true).ok();
    upstream.set_nodelay(true).ok();
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    // Set by the first chunk either way that meets a `BlackHole`: from then on the connection
    // swallows both ways, whatever the mode.
    let dead = Arc::new(AtomicBool::new(false));
    // Whichever direction ends first (a close or an error) ends the connection; the halves
    // drop here and the sockets close with a reset.
    tokio::select! {
        () = &mut cut => {}
        () = pump(cr, uw, ctx.mode.clone(), false, Arc::clone(&dead)) => {}
        () = pump(ur, cw, ctx.mode.clone(), true, dead) => {}
    }
}

/// Whether a chunk is to be dropped: the connection met a `BlackHole` (now, or before).
fn swallowed(dead: &AtomicBool, mode: &watch::Receiver<Mode>) -> bool {
    if *mode.borrow() == Mode::BlackHole {
        dead.store(true, Ordering::Release);
    }
    dead.load(Ordering::Acquire)
}

/// Copies `from` to `to`, honouring the mode at the moment each chunk is written; once the
/// connection met a `BlackHole`, drops every chunk instead.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    replies: bool,
    dead: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut mode = mode;
        let mut watch_mode = mode.clone();
        loop {
            // An idle connection dies in a black hole too: watch the mode between chunks. Both
            // branches are cancel-safe; the losing one is simply polled again next time.
            let (at, chunk) = tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
                r = watch_mode.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if *watch_mode.borrow_and_update() == Mode::BlackHole {
                        dead.store(true, Ordering::Release);
                    }
                    continue;
                }
            };
            if swallowed(&dead, &mode) {
                continue;
            }
            loop {
                let current = *mode.borrow_and_update();
                match current {
                    Mode::Refuse => return,
                    Mode::BlackHole => {
                        dead.store(true, Ordering::Release);
                        break;
                    }
                    Mode::Hang => {
                        if mode.changed().await.is_err() {
                            return;
                        }
                    }
                    Mode::Delay(d) if replies => {
                        // Re-check the mode if it changes while waiting.
                        tokio::select! {
                            () = tokio::time::sleep_until(at + d) => break,
                            r = mode.changed() => if r.is_err() { return },
                        }
                    }
                    Mode::Pass | Mode::Delay(_) => break,
                }
            }
            if dead.load(Ordering::Acquire) {
                continue;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The reader ends on EOF; the writer then flushes what is queued (unless held) and ends.
    tokio::join!(reader, writer);
}
