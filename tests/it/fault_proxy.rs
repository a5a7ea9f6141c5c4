//! The TCP fault proxy the other tests rely on (`helpers::proxy`), checked against an echo
//! server: each mode does what its doc says. Here rather than beside the proxy, so that the
//! cadence binary, which shares the proxy, does not run them next to its timing measurements.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::proxy::{FaultProxy, Mode};

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

async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> std::io::Result<Vec<u8>> {
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
async fn black_hole_swallows_open_and_new_connections_and_they_stay_dead() {
    let proxy = FaultProxy::start(echo_server().await).await;
    let within = Duration::from_secs(5);
    let mut busy = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut busy, b"a", within).await.unwrap();
    let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut idle, b"i", within).await.unwrap();
    proxy.set_mode(Mode::BlackHole);
    // Proving that nothing arrives needs a bounded wait; 200 ms is plenty on loopback.
    let quiet = Duration::from_millis(200);
    let swallowed = round_trip(&mut busy, b"b", quiet).await;
    assert_eq!(swallowed.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    let swallowed = round_trip(&mut during, b"c", quiet).await;
    assert_eq!(swallowed.unwrap_err().kind(), std::io::ErrorKind::TimedOut);

    proxy.set_mode(Mode::Pass);
    // Every connection that lived through it, idle or not, stays dead; nothing comes back.
    for s in [&mut busy, &mut idle, &mut during] {
        let dead = round_trip(s, b"d", quiet).await;
        assert_eq!(dead.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"e", within).await.unwrap(), b"e");
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
