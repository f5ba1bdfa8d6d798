//! "did you mean ...?" suggestions (BuildKit `util/suggest`).

/// The option closest to `value` by case-insensitive edit distance, if it is
/// within two edits. An exact (case-insensitive) match is not a suggestion.
pub(crate) fn closest(value: &str, options: &[String]) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let mut best: Option<(usize, &String)> = None;
    for opt in options {
        let o: Vec<char> = opt.to_lowercase().chars().collect();
        if o == v {
            return None;
        }
        let d = levenshtein(&v, &o);
        if d < 3 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, opt));
        }
    }
    best.map(|(_, o)| o.clone())
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let opts: Vec<String> = ["RUN", "COPY", "ENV"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("RUNN", &opts).as_deref(), Some("RUN"));
        assert_eq!(closest("cpy", &opts).as_deref(), Some("COPY"));
        assert_eq!(closest("XYZZY", &opts), None);
        assert_eq!(closest("run", &opts), None);
    }
}
