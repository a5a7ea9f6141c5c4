//! [`Problem`] and [`Problems`]: how validation reports what is wrong. Every validation step in
//! botpipe (the main file, the collector's file, `validate`'s secret check) collects *all*
//! problems with their dotted field paths instead of stopping at the first, so an operator fixes
//! a file in one round.

use std::fmt;

/// One configuration problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path, e.g. `endpoints.east.interval` or `sources[1].regex`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The problems found so far by one validation pass.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// How many problems were recorded; compare before and after a section to know whether it
    /// added any.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `value` when nothing was recorded, otherwise every problem in the order found.
    ///
    /// # Errors
    /// The recorded problems, when there are any.
    pub fn into_result<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}
