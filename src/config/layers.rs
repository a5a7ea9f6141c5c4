//! Extracting a configuration type from its layers (file, environment) with every problem
//! reported at once. serde stops at the first field that does not fit (an unknown field, a
//! string where a number belongs), which made an operator fix a file one error per run; here
//! each such field is reported with its dotted path, taken out of the merged tree, and the rest
//! extracted again, until what remains fits. What remains is returned too, so the caller can
//! validate it and report those problems in the same list.

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;

use super::Problem;

/// Rounds of "report, remove, extract again"; far more than a hand-written file holds.
const MAX_ROUNDS: usize = 64;

/// The fields that did not fit, and the value extracted from the rest (`None` when even the
/// rest could not be read, e.g. a file that is not TOML).
#[derive(Debug)]
pub struct ExtractProblems<T> {
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
    /// The value without the fields that did not fit.
    pub rest: Option<T>,
}

/// Extracts `T`, or every field that does not fit.
///
/// # Errors
/// The problems, with what could be extracted without them.
pub fn extract_all<T: DeserializeOwned>(figment: &Figment) -> Result<T, ExtractProblems<T>> {
    let first = match figment.extract::<T>() {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    // The merged tree; reading it fails only when a source is unreadable (a TOML syntax
    // error), which is then the one problem.
    let Ok(mut tree) = figment.extract::<Dict>() else {
        return Err(ExtractProblems {
            problems: as_problems(first),
            rest: None,
        });
    };
    let mut problems: Vec<Problem> = Vec::new();
    let mut error = first;
    for _ in 0..MAX_ROUNDS {
        let mut removed_any = false;
        for e in error {
            let path = key_path(&e);
            let problem = Problem {
                path: display_path(&path),
                message: e.kind.to_string(),
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
            removed_any |= remove(&mut tree, &path);
        }
        if !removed_any {
            return Err(ExtractProblems {
                problems,
                rest: None,
            });
        }
        match Figment::from(Serialized::defaults(&tree)).extract::<T>() {
            Ok(rest) => {
                return Err(ExtractProblems {
                    problems,
                    rest: Some(rest),
                })
            }
            Err(e) => error = e,
        }
    }
    Err(ExtractProblems {
        problems,
        rest: None,
    })
}

/// Each error of a chain as a problem, for errors that are not about one field.
fn as_problems(e: figment::Error) -> Vec<Problem> {
    e.into_iter()
        .map(|e| {
            let path = key_path(&e);
            Problem {
                path: if path.is_empty() {
                    "(file)".to_owned()
                } else {
                    display_path(&path)
                },
                // The whole text here: it names the file and the line of a syntax error.
                message: e.to_string(),
            }
        })
        .collect()
}

/// The path of the offending key; an unknown field's path is that of its table, so the field
/// is added.
fn key_path(e: &figment::Error) -> Vec<String> {
    let mut path = e.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    path
}

/// `endpoints.east.batch_size`, `sources[1].regex`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// Removes the value at `path` from `tree`; false when there is none.
fn remove(tree: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => tree.remove(last).is_some(),
        [first, rest @ ..] => tree.get_mut(first).is_some_and(|v| remove_in(v, rest)),
    }
}

/// [`remove`] below a table or an array (`[[sources]]`, whose path segments are indices).
fn remove_in(value: &mut Value, path: &[String]) -> bool {
    let index = |s: &String| s.parse::<usize>().ok();
    match (value, path) {
        (_, []) => false,
        (Value::Dict(_, d), _) => remove(d, path),
        (Value::Array(_, items), [last]) => match index(last) {
            Some(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        (Value::Array(_, items), [first, rest @ ..]) => index(first)
            .and_then(|i| items.get_mut(i))
            .is_some_and(|v| remove_in(v, rest)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load, ConfigError};

    /// Issue 13: parse errors came one per run, and each was printed twice (the message and its
    /// own source).
    #[test]
    fn issue_13_every_parse_problem_is_reported_once_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("botpipe.toml");
        std::fs::write(
            &path,
            r#"
            colour = "blue"
            [http]
            listen = "127.0.0.1:8080"
            max_connections = "many"
            [worker]
            count = 0
            [endpoints.east]
            url = "http://127.0.0.1:9/"
            batch_size = "lots"
            intervall = "5s"
            [botnet]
            allowed_types = ["mozi", 7]
            "#,
        )
        .unwrap();
        let err = load(Some(&path)).unwrap_err();
        let problems = match &err {
            ConfigError::Invalid(problems) => problems.clone(),
            other => panic!("{other:?}"),
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "colour",
            "http.max_connections",
            "endpoints.east.batch_size",
            "endpoints.east.intervall",
            "botnet.allowed_types[1]",
            // A validation problem of a field that parsed, in the same report.
            "worker.count",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        let printed = format!("{:#}", anyhow::Error::new(err));
        for p in &problems {
            assert_eq!(
                printed.matches(&p.to_string()).count(),
                1,
                "{p} not printed exactly once in:\n{printed}"
            );
        }
    }
}
