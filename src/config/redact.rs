//! [`RedactedUrl`]: the one place where a URL that may carry a secret is held. Store, Redis and
//! endpoint URLs are kept in it from the raw file to the running component, so every `Debug` or
//! `Display` of configuration (the startup line, error messages, `{:?}` of `Settings`) shows the
//! URL with its secrets masked, and only code that connects asks for the real text.
//!
//! What is masked: the password of the user-info part (`postgres://app:***@db/botpipe`) and the
//! value of every query parameter whose name says it is a secret (`password`, `key`, `token`, …;
//! see [`SECRET_QUERY_KEYS`]). A text that does not parse as a URL is masked between `://` and
//! its last `@`, so a malformed URL does not leak either.

use std::fmt;
use std::ops::Deref;

use serde::Deserialize;
use url::Url;

/// Query parameter names (compared without case, as substrings) whose values are masked.
pub const SECRET_QUERY_KEYS: [&str; 6] = ["pass", "pwd", "secret", "token", "key", "auth"];

/// The mask that replaces a secret.
const MASK: &str = "***";

/// A URL that prints with its secrets masked. [`Deref`] gives the real value to code that
/// connects (`&*url`, or a `&str`/`&Url` parameter); formatting never does.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedactedUrl<T = String>(T);

impl<T> RedactedUrl<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The real value, with its secrets; for connecting only.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The real value, with its secrets; for connecting only.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for RedactedUrl<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl From<String> for RedactedUrl<String> {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for RedactedUrl<String> {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<Url> for RedactedUrl<Url> {
    fn from(u: Url) -> Self {
        Self(u)
    }
}

impl<T: AsRef<str>> fmt::Display for RedactedUrl<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.0.as_ref()))
    }
}

impl<T: AsRef<str>> fmt::Debug for RedactedUrl<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(self.0.as_ref()))
    }
}

/// `u` with its password and secret query values masked, for messages.
pub fn redact_url(u: &str) -> String {
    let Ok(mut url) = Url::parse(u) else {
        return redact_unparsed(u);
    };
    if url.password().is_some() {
        // Fails only for URLs that cannot have a password, which then have none to hide.
        let _cannot_have_one = url.set_password(Some(MASK));
    }
    let secret_query = url.query_pairs().any(|(k, _)| is_secret_key(&k));
    if secret_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    MASK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_QUERY_KEYS.iter().any(|s| k.contains(s))
}

/// Masks `scheme://<here>@host` of a text that is not a URL, and any query.
fn redact_unparsed(u: &str) -> String {
    let mut out = match (u.find("://"), u.rfind('@')) {
        (Some(start), Some(at)) if at > start + 3 => {
            format!("{}{MASK}{}", &u[..start + 3], &u[at..])
        }
        _ => u.to_owned(),
    };
    if let Some(q) = out.find('?') {
        out.truncate(q);
        out.push('?');
        out.push_str(MASK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_query_values_are_masked() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/botpipe"),
            "postgres://app:***@db:5432/botpipe"
        );
        assert_eq!(
            redact_url("rediss://:hunter2@redis:6380/0"),
            "rediss://:***@redis:6380/0"
        );
        let q = redact_url("postgres://db/botpipe?user=app&password=hunter2&sslmode=require");
        assert!(!q.contains("hunter2"), "{q}");
        assert!(
            q.contains("sslmode=require") && q.contains("user=app"),
            "{q}"
        );
        assert_eq!(redact_url("http://10.0.0.5:8888/"), "http://10.0.0.5:8888/");
        let bad = redact_url("postgres://app:hun ter2@[db/botpipe");
        assert!(!bad.contains("hun ter2"), "{bad}");
    }

    #[test]
    fn debug_and_display_mask_but_deref_gives_the_real_url() {
        let u = RedactedUrl::from("mysql://root:hunter2@127.0.0.1/db");
        assert!(!format!("{u:?} {u} {u:#?}").contains("hunter2"));
        assert!(u.contains("hunter2"));
        let parsed = RedactedUrl::from(Url::parse("https://u:hunter2@c2.example/").unwrap());
        assert!(!format!("{parsed:?} {parsed}").contains("hunter2"));
        assert_eq!(parsed.password(), Some("hunter2"));
    }
}
