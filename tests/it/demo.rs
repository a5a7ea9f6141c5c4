//! `botpipe demo` run as the real binary, as a newcomer runs it: where its data goes, what it
//! prints when stderr is not a terminal, and which geodata it uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::helpers::bin::{text, write_config};

/// Runs `botpipe [--config config] demo <args…>` in `cwd` with `TMPDIR=tmp`, stderr a pipe.
async fn demo(cwd: &Path, tmp: &Path, config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_botpipe"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("demo")
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .env_remove("BOTPIPE_CONFIG")
        .env_remove("BOTPIPE_DATA_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn summary(out: &Output) -> serde_json::Value {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let s: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not the JSON summary ({e}): {stdout}"));
    assert_eq!(s["matches_expected"], true, "{stdout}");
    s
}

/// Issue 16: the demo wrote `./botpipe-data/demo-<time>` and left it there, and printed no
/// progress unless stderr was a terminal. Now it works in a temporary directory it removes, and
/// prints a progress line every few seconds to a pipe (stdout stays the JSON summary).
#[tokio::test]
async fn issue_16_demo_leaves_nothing_behind_and_shows_progress_on_a_pipe() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(
        cwd.path(),
        tmp.path(),
        None,
        &["--records", "20000", "--batch-size", "500", "--json"],
    )
    .await;
    let s = summary(&out);
    assert!(s["data_dir"].is_null(), "{s}");
    assert_eq!(
        entries(tmp.path()),
        Vec::<PathBuf>::new(),
        "temporary directory left behind"
    );
    assert_eq!(
        entries(cwd.path()),
        Vec::<PathBuf>::new(),
        "files left in the working directory"
    );

    let (_, stderr) = text(&out);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("demo: pulled "))
        .collect();
    // The first look and the last, and one every 2 s in between (their spacing is a unit test
    // of the demo; how many fit depends on this machine's speed).
    let elapsed = s["elapsed_seconds"].as_f64().unwrap();
    let periodic = (elapsed / 2.2).floor() as usize;
    assert!(
        progress.len() >= 2 + periodic.saturating_sub(1),
        "{elapsed} s: {stderr}"
    );
    assert!(
        progress[progress.len() - 1]
            .starts_with("demo: pulled 20000/20000 records, queue 0 batches"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "a terminal's redraw on a pipe: {stderr:?}"
    );
}

/// Issue 16: with `--keep` the temporary directory stays, and the demo says where it is.
#[tokio::test]
async fn issue_16_demo_keep_keeps_its_directory_and_says_where() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(
        cwd.path(),
        tmp.path(),
        None,
        &["--records", "300", "--keep", "--json"],
    )
    .await;
    let s = summary(&out);
    let kept = PathBuf::from(s["data_dir"].as_str().unwrap());
    assert_eq!(entries(tmp.path()), vec![kept.clone()]);
    assert!(kept.join("botpipe.sqlite").is_file(), "{}", kept.display());
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(&format!("demo: data in {} (kept", kept.display())),
        "{stderr}"
    );
    assert_eq!(entries(cwd.path()), Vec::<PathBuf>::new());
}

/// Issue 16: the demo looked for geodata in `./botpipe-data/geo` whatever the configuration
/// said. It now finds it as `run` does: in `<data_dir>/geo` of the configured data directory.
#[tokio::test]
async fn issue_16_demo_uses_the_geodata_run_finds_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let geo = data.join("geo");
    std::fs::create_dir_all(&geo).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo");
    std::fs::copy(fixtures.join("qqwry.ipdb"), geo.join("qqwry.ipdb")).unwrap();
    std::fs::copy(fixtures.join("asn.csv"), geo.join("asn.csv")).unwrap();
    let config = write_config(
        dir.path(),
        &format!("data_dir = {:?}\n", data.display().to_string()),
    );
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(
        cwd.path(),
        tmp.path(),
        Some(&config),
        &["--records", "300", "--json"],
    )
    .await;
    let s = summary(&out);
    let geodata = s["geodata"].as_str().unwrap();
    for file in ["qqwry.ipdb", "asn.csv"] {
        assert!(
            geodata.contains(&geo.join(file).display().to_string()),
            "{file} not used: {geodata}"
        );
    }
    // The demo wrote nothing into the configured data directory.
    let mut left = entries(&data);
    left.sort();
    assert_eq!(left, vec![geo]);
    assert_eq!(entries(tmp.path()), Vec::<PathBuf>::new());
}
