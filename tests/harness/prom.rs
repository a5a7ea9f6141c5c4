//! Reading Prometheus text exposition, enough to check that series exist and move.

/// The sum of every sample of `name` whose labels include all of `labels`; `None` when no
/// sample matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else {
                continue;
            };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer name with this prefix
        };
        let ok = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if ok {
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Every metric family named in the exposition (from `# TYPE` lines).
pub fn families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
