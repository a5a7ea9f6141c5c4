//! Running the real `botpipe` binary: one-shot commands with their output, and a long-running
//! `botpipe run` whose HTTP address is read from its JSON log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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
    /// Every line it wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl RunningBotpipe {
    /// The lines it logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

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
    let (child, log, addr) = start_run(config, "json", env);
    let addr = addr
        .recv_timeout(Duration::from_secs(60))
        .expect("botpipe run did not report its HTTP address");
    RunningBotpipe {
        child,
        http: addr.parse().unwrap(),
        log,
    }
}

/// Starts `botpipe --log-format pretty --config <config> run`, whose `[http] listen` must be
/// `http` (a readable log gives no address to read back), and waits (up to 60 s) for its
/// `/health` to answer.
pub async fn spawn_run_pretty(config: &Path, http: SocketAddr) -> RunningBotpipe {
    let (mut child, log, _no_address) = start_run(config, "pretty", &[]);
    let url = format!("http://{http}/health");
    let client = reqwest::Client::new();
    super::wait_until(Duration::from_secs(60), "/health to answer", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("botpipe exited at start with {status}");
        }
        let request = client.get(&url).send();
        async move { matches!(request.await, Ok(r) if r.status() == 200) }
    })
    .await;
    RunningBotpipe { child, http, log }
}

/// Spawns `botpipe --log-format <format> --log-level info --config <config> run`; a thread
/// keeps every stderr line (echoed when `TEST_LOG` is set) and sends the address of the JSON
/// "HTTP server listening." line.
fn start_run(
    config: &Path,
    format: &str,
    env: &[(&str, &str)],
) -> (Child, Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(["--log-format", format, "--log-level", "info", "--config"])
        .arg(config)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let lines = Arc::clone(&log);
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
            lines.lock().unwrap().push(line);
        }
    });
    (child, log, rx)
}
