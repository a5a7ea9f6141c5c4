//! Running the real `botpipe` binary: one-shot commands with their output, and a long-running
//! `botpipe run` whose HTTP address is read from its JSON log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Writes `toml` as `botpipe.toml` in `dir`.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("botpipe.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Runs `botpipe --config <config> <args…>` to completion (off the async runtime).
pub async fn run_botpipe(config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_botpipe"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args).stdin(Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Text of stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A `botpipe run` child, killed with SIGKILL when dropped.
pub struct RunningBotpipe {
    pub child: Child,
    pub http: SocketAddr,
}

impl RunningBotpipe {
    /// `kill -9`, and wait for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait (up to 30 s) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let mut status = None;
        super::wait_until(
            Duration::from_secs(30),
            "botpipe exits after SIGTERM",
            || {
                status = self.child.try_wait().unwrap();
                let done = status.is_some();
                async move { done }
            },
        )
        .await;
        status.unwrap()
    }
}

impl Drop for RunningBotpipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `botpipe --log-format json --config <config> run` and waits (up to 60 s) for its
/// "HTTP server listening." line to learn the address. The rest of stderr is drained in a
/// thread (and echoed when `TEST_LOG` is set).
pub fn spawn_run(config: &Path) -> RunningBotpipe {
    spawn_run_with(config, &[])
}

/// [`spawn_run`] with extra environment variables (e.g. `BOTPIPE_NAME`).
pub fn spawn_run_with(config: &Path, env: &[(&str, &str)]) -> RunningBotpipe {
    let mut child = Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(["--log-format", "json", "--log-level", "info", "--config"])
        .arg(config)
        .arg("run")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let echo = std::env::var_os("TEST_LOG").is_some();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[botpipe] {line}");
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "HTTP server listening." {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("botpipe run did not report its HTTP address");
    RunningBotpipe {
        child,
        http: addr.parse().unwrap(),
    }
}
