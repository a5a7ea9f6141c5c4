//! [`SecretSource`]: where a secret (API key, HMAC secret, database password) comes from. A
//! secret is given inline, by environment variable or as a file path (`x`, `x_env`, `x_file` in
//! a configuration file), validated purely, and read only when a component is built, so
//! validation never touches the environment or the disk. Shared by botpipe's configuration and
//! the collector's.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::Problems;

/// Where a secret comes from; resolved only when a component is built.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Given inline in the file or environment.
    Inline(SecretString),
    /// Read from this environment variable.
    Env(String),
    /// Read from this file; a trailing newline is ignored.
    File(PathBuf),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The named variable is not set.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("reading secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl SecretSource {
    /// Reads the secret.
    ///
    /// # Errors
    /// When the variable is unset or the file unreadable.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            Self::Inline(s) => Ok(s.clone()),
            Self::Env(name) => std::env::var(name)
                .map(SecretString::from)
                .map_err(|_| SecretError::MissingEnv(name.clone())),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|s| SecretString::from(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// True for an inline value that is empty (a problem wherever a secret is required; an
    /// environment variable or file is only read later).
    pub fn is_empty_inline(&self) -> bool {
        matches!(self, Self::Inline(s) if s.expose_secret().is_empty())
    }

    /// The source given by the three fields `x`, `x_env` and `x_file` of one secret at `path`
    /// (e.g. `push.secret`), or `None` when none is given. More than one is a problem at `path`;
    /// the inline value then wins, then the variable.
    pub fn from_parts(
        path: &str,
        inline: Option<&SecretString>,
        env: Option<&String>,
        file: Option<&PathBuf>,
        problems: &mut Problems,
    ) -> Option<Self> {
        let given = [inline.is_some(), env.is_some(), file.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given > 1 {
            let field = path.rsplit('.').next().unwrap_or(path);
            problems.push(
                path,
                format!("give only one of {field}, {field}_env, {field}_file"),
            );
        }
        if let Some(s) = inline {
            Some(Self::Inline(s.clone()))
        } else if let Some(e) = env {
            Some(Self::Env(e.clone()))
        } else {
            file.map(|f| Self::File(f.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_one_part_is_a_problem_naming_the_three_fields() {
        let mut p = Problems::new();
        let inline = SecretString::from("k".to_owned());
        let env = "K".to_owned();
        let got = SecretSource::from_parts("push.secret", Some(&inline), Some(&env), None, &mut p);
        assert!(matches!(got, Some(SecretSource::Inline(_))));
        let problems = p.into_result(()).unwrap_err();
        assert_eq!(problems[0].path, "push.secret");
        assert_eq!(
            problems[0].message,
            "give only one of secret, secret_env, secret_file"
        );
    }

    #[test]
    fn an_empty_inline_value_is_flagged_and_env_or_file_are_not_read() {
        assert!(SecretSource::Inline(String::new().into()).is_empty_inline());
        assert!(!SecretSource::Env(String::new()).is_empty_inline());
        assert!(!SecretSource::File(PathBuf::new()).is_empty_inline());
    }
}
