//! A TCP fault proxy for tests: listens on a random local port and forwards to an upstream
//! (Redis, a database), misbehaving on demand, switchable while connections are open.
//!
//! Modes ([`Mode`]):
//! - `Pass`: forwards both ways.
//! - `Refuse`: Redis is dead. Existing connections are cut with a TCP reset; new ones are
//!   accepted and reset at once, which a client sees like a refused connection.
//! - `Hang`: a black hole. New connections are accepted but never connected upstream; bytes on
//!   existing ones are held in both directions. Switching back to `Pass` releases what was held.
//! - `Delay(d)`: every chunk from upstream reaches the client `d` after it arrived (requests go
//!   up at once, so the server acts on them; only its replies are late).
//!
//! [`FaultProxy::reset`] cuts every open connection with a reset and keeps the mode: a server
//! restart as the clients see it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

async fn serve(client: TcpStream, ctx: Ctx) {
    let seen = *ctx.resets.borrow();
    let cut = cut(ctx.resets.clone(), seen, ctx.stop.clone());
    tokio::pin!(cut);
    // A black hole holds the client without dialling upstream until the mode changes.
    let mut mode = ctx.mode.clone();
    let ready = async {
        let m = *mode.wait_for(|m| *m != Mode::Hang).await.ok()?;
        if m == Mode::Refuse {
            return None;
        }
        TcpStream::connect(ctx.upstream).await.ok()
    };
    let upstream = tokio::select! {
        () = &mut cut => return,
        u = ready => match u {
            Some(u) => u,
            None => return,
        },
    };
    upstream.set_zero_linger().ok();
    client.set_nodelay(true).ok();
    upstream.set_nodelay(true).ok();
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    // Whichever direction ends first (a close or an error) ends the connection; the halves
    // drop here and the sockets close with a reset.
    tokio::select! {
        () = &mut cut => {}
        () = pump(cr, uw, ctx.mode.clone(), false) => {}
        () = pump(ur, cw, ctx.mode.clone(), true) => {}
    }
}

/// Copies `from` to `to`, honouring the mode at the moment each chunk is written.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    replies: bool,
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
        while let Some((at, chunk)) = rx.recv().await {
            loop {
                let current = *mode.borrow_and_update();
                match current {
                    Mode::Refuse => return,
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
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The reader ends on EOF; the writer then flushes what is queued (unless held) and ends.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes everything back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.ok();
                });
            }
        });
        addr
    }

    async fn round_trip(
        s: &mut TcpStream,
        msg: &[u8],
        within: Duration,
    ) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Ok(buf),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    #[tokio::test]
    async fn proxy_passes_traffic_through() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let got = round_trip(&mut s, b"hello", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn refuse_cuts_open_connections_and_rejects_new_ones() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"a", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.set_mode(Mode::Refuse);
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "open connection must be cut, got {n:?}"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut fresh, b"b", Duration::from_secs(5))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn hang_holds_bytes_until_healed() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut s, b"a", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.set_mode(Mode::Hang);
        // Proving that nothing arrives needs a bounded wait; 200 ms is plenty on loopback.
        let held = round_trip(&mut s, b"b", Duration::from_millis(200)).await;
        assert_eq!(held.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        proxy.set_mode(Mode::Pass);
        let mut buf = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"b", "held bytes flow once healed");
    }

    #[tokio::test]
    async fn hang_accepts_new_connections_without_answering() {
        let proxy = FaultProxy::start(echo_server().await).await;
        proxy.set_mode(Mode::Hang);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let held = round_trip(&mut s, b"x", Duration::from_millis(200)).await;
        assert_eq!(held.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn delay_holds_each_reply_for_the_delay() {
        let proxy = FaultProxy::start(echo_server().await).await;
        proxy.set_mode(Mode::Delay(Duration::from_millis(300)));
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = std::time::Instant::now();
        round_trip(&mut s, b"slow", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn reset_cuts_open_connections_and_accepts_new_ones() {
        let proxy = FaultProxy::start(echo_server().await).await;
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut old, b"a", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.reset();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), old.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "open connection must be cut, got {n:?}"
        );
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut new, b"c", Duration::from_secs(5))
                .await
                .unwrap(),
            b"c"
        );
    }
}
