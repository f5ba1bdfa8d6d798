//! `.dockerignore` parsing and matching: arbitrary ignore files and paths
//! must never panic, hang (the regex engine is linear-time) or give
//! answers that contradict the matcher's own invariants.
#![no_main]

use berth_context::IgnoreMatcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line(s) up to a NUL: the ignore file; the rest: paths to test.
    let (file, paths) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(m) = IgnoreMatcher::from_dockerignore(file) else { return };
    // Re-parsing the normalised patterns gives the same matcher.
    let again = IgnoreMatcher::new(&m.patterns()).expect("normalised patterns parse again");
    for path in String::from_utf8_lossy(paths).split('\n').take(32) {
        let excluded = m.is_excluded(path);
        assert_eq!(excluded, again.is_excluded(path), "{path:?}");
        // The context root is never excluded.
        if path.trim_matches('/').is_empty() || path == "." {
            assert!(!excluded);
        }
    }
    // Also as COPY --exclude patterns, one per line.
    let lines: Vec<String> = String::from_utf8_lossy(file).lines().map(str::to_string).collect();
    if let Ok(m) = IgnoreMatcher::new(&lines) {
        for path in String::from_utf8_lossy(paths).split('\n').take(32) {
            let _ = m.is_excluded(path);
        }
    }
});
