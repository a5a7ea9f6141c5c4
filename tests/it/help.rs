//! `--help` and the README agree. The README's table of flags that have an environment
//! variable is parsed here and checked, both ways, against the `--help` of botpipe and of every
//! command and subcommand, so neither can drift: a flag the table lists has that variable (and
//! is where the table says), and no other flag has one. Global flags are listed apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::bin::{text, write_config};

/// What `--help` heads the global flags with.
const GLOBAL: &str = "Global options";

/// One flag as a command's `--help` shows it.
#[derive(Debug, Clone)]
struct HelpFlag {
    /// The heading it is listed under.
    heading: String,
    /// Its environment variable.
    env: Option<String>,
    /// Its whole entry.
    text: String,
}

/// A command's `--help`: its subcommands and its flags by long name.
#[derive(Debug, Default)]
struct Help {
    commands: Vec<String>,
    flags: BTreeMap<String, HelpFlag>,
}

/// `botpipe <path…> --help`, with no environment (a set variable would show its value).
fn help_text(path: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(path.split_whitespace())
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "botpipe {path} --help: {stderr}");
    stdout
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The first `--long-name` in `s`.
fn long_flag(s: &str) -> Option<String> {
    let at = s.find("--")?;
    let name: String = s[at + 2..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!name.is_empty()).then(|| format!("--{name}"))
}

fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut heading = String::new();
    let mut current: Option<(String, HelpFlag)> = None;
    let finish = |help: &mut Help, current: &mut Option<(String, HelpFlag)>| {
        if let Some((name, mut flag)) = current.take() {
            flag.env = flag.text.find("[env: ").map(|at| {
                flag.text[at + 6..]
                    .chars()
                    .take_while(|c| *c != '=' && *c != ']')
                    .collect()
            });
            assert!(
                help.flags.insert(name.clone(), flag).is_none(),
                "{name} listed twice:\n{text}"
            );
        }
    };
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && line.len() < 40 {
            finish(&mut help, &mut current);
            heading = line.trim_end_matches(':').to_owned();
            continue;
        }
        match heading.as_str() {
            "Commands" if indent(line) == 2 => {
                let name = line.split_whitespace().next().unwrap_or_default();
                if name != "help" {
                    help.commands.push(name.to_owned());
                }
            }
            h if h == "Options" || h.ends_with("options") => {
                let entry = line.trim_start().starts_with('-') && indent(line) <= 6;
                if entry {
                    finish(&mut help, &mut current);
                    if let Some(name) = long_flag(line) {
                        let flag = HelpFlag {
                            heading: heading.clone(),
                            env: None,
                            text: line.to_owned(),
                        };
                        current = Some((name, flag));
                    }
                } else if let Some((_, flag)) = &mut current {
                    flag.text.push('\n');
                    flag.text.push_str(line);
                }
            }
            _ => {}
        }
    }
    finish(&mut help, &mut current);
    help
}

/// Every command path ("" is botpipe itself, then "run", …, "dlq replay") with its help.
fn all_helps() -> BTreeMap<String, Help> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(path) = todo.pop() {
        let help = parse_help(&help_text(&path));
        for c in &help.commands {
            todo.push(format!("{path} {c}").trim().to_owned());
        }
        out.insert(path, help);
    }
    out
}

/// A row of the README's table.
#[derive(Debug)]
struct Row {
    flag: String,
    /// `None`: a global flag.
    commands: Option<Vec<String>>,
    env: Option<String>,
}

/// The README's "flag | commands | environment variable" table.
fn readme_rows() -> Vec<Row> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| flag | commands | environment variable |"));
    assert!(lines.next().is_some(), "README has no flag table");
    let backticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let rows: Vec<Row> = lines
        .skip(1) // |---|---|---|
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let l = l.replace("\\|", "¦");
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 3, "README flag table row: {l}");
            let flag = long_flag(cells[0]).unwrap_or_else(|| panic!("no flag in {l}"));
            let commands = (cells[1] != "global").then(|| backticked(cells[1]));
            let env = backticked(cells[2])
                .into_iter()
                .find(|v| v.starts_with("BOTPIPE_"));
            Row {
                flag,
                commands,
                env,
            }
        })
        .collect();
    assert!(rows.len() >= 3, "{rows:?}");
    rows
}

#[test]
fn every_help_matches_the_readme_flag_table_and_lists_global_flags_apart() {
    let helps = all_helps();
    assert!(helps.contains_key("dlq replay") && helps.contains_key("bench store"));
    let rows = readme_rows();
    let global: BTreeMap<&str, &Option<String>> = rows
        .iter()
        .filter(|r| r.commands.is_none())
        .map(|r| (r.flag.as_str(), &r.env))
        .collect();
    let mut specific: BTreeMap<(&str, &str), &Option<String>> = BTreeMap::new();
    for r in &rows {
        for c in r.commands.iter().flatten() {
            assert!(
                helps.contains_key(c),
                "README names a command `{c}` botpipe does not have"
            );
            specific.insert((c.as_str(), r.flag.as_str()), &r.env);
        }
    }

    // What every help says agrees with the table.
    for (path, help) in &helps {
        let mut seen_global = BTreeSet::new();
        for (flag, h) in &help.flags {
            let what = format!("`botpipe {path} --help`, {flag}");
            if h.heading == GLOBAL {
                let env = global.get(flag.as_str()).unwrap_or_else(|| {
                    panic!("{what}: under {GLOBAL} but not global in the README")
                });
                assert!(
                    !specific.contains_key(&(path.as_str(), flag.as_str())),
                    "{what}: global, but the README has a row for this command"
                );
                assert_eq!(&h.env, *env, "{what}: environment variable");
                seen_global.insert(flag.as_str());
            } else if let Some(env) = specific.get(&(path.as_str(), flag.as_str())) {
                assert_eq!(&h.env, *env, "{what}: environment variable");
            } else {
                assert_eq!(
                    h.env, None,
                    "{what}: has an environment variable the README does not list"
                );
                assert!(
                    !global.contains_key(flag.as_str()),
                    "{what}: a global flag listed among the command's own, under {:?}",
                    h.heading
                );
            }
        }
        // Every global flag is there, apart, unless the command has its own of that name.
        for flag in global.keys() {
            if !specific.contains_key(&(path.as_str(), *flag)) {
                assert!(
                    seen_global.contains(flag),
                    "`botpipe {path} --help`: {flag} missing under {GLOBAL}"
                );
            }
        }
    }
    // Every row's flag is where the row says.
    for (path, flag) in specific.keys() {
        assert!(
            helps[*path].flags.contains_key(*flag),
            "README: `{path}` has {flag}, its --help does not"
        );
    }

    // The collector's --config is the collector's; dlq replay says how to write its ids.
    let collector = &helps["collector"].flags["--config"];
    assert!(
        collector.text.contains("collector's configuration"),
        "{}",
        collector.text
    );
    assert!(
        !collector.text.contains("embedded default"),
        "{}",
        collector.text
    );
    for (path, example) in [
        ("dlq replay", "--ids 12,15,40"),
        ("dlq replay-batches", "comma-separated"),
    ] {
        let ids = &helps[path].flags["--ids"];
        assert!(
            ids.text.contains("comma-separated") && ids.text.contains(example),
            "{path}: {}",
            ids.text
        );
    }
}

fn collector_with_env(env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_botpipe"));
    cmd.arg("collector")
        .env_remove("BOTPIPE_CONFIG")
        .env_remove("BOTPIPE_COLLECTOR_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Issue 16: `botpipe collector` took `BOTPIPE_CONFIG`, botpipe's configuration, as its own
/// file. It reads `BOTPIPE_COLLECTOR_CONFIG` (or its `--config`) and nothing else.
#[test]
fn issue_16_the_collector_reads_its_own_environment_variable_not_botpipes() {
    let dir = tempfile::tempdir().unwrap();
    let botpipe = write_config(
        dir.path(),
        "data_dir = \"somewhere\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    let out = collector_with_env(&[("BOTPIPE_CONFIG", &botpipe)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("botpipe collector needs --config"),
        "{stderr}"
    );

    let bad = dir.path().join("collector.toml");
    std::fs::write(&bad, "listen = \"nowhere\"\n").unwrap();
    let out = collector_with_env(&[
        ("BOTPIPE_CONFIG", &botpipe),
        ("BOTPIPE_COLLECTOR_CONFIG", &bad),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("collector.toml"), "{stderr}");
    assert!(stderr.contains("listen"), "{stderr}");
}
