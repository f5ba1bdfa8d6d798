//! `.dockerignore` files and `COPY --exclude` patterns (moby/patternmatcher
//! semantics, as BuildKit's file walker applies them).

use std::path::{Path, PathBuf};

use crate::gomatch;
use crate::pattern::Pattern;
use crate::Error;

/// A compiled list of exclude patterns: a `.dockerignore` file or the
/// `--exclude` flags of one `COPY`.
///
/// Patterns apply in order; a later `!pattern` re-includes what an earlier
/// one excluded. A pattern that matches a directory excludes everything
/// below it, unless a later exception names something inside (then the
/// directory stays, holding only the re-included entries).
#[derive(Debug, Clone)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
    /// fsutil skips an excluded directory without looking inside when every
    /// exception is a plain path; that shortcut is observable (a glob
    /// exception cannot then reach inside), so it is mirrored.
    only_prefix_exceptions: bool,
    origin: Option<PathBuf>,
}

impl Default for IgnoreMatcher {
    fn default() -> Self {
        Self::const_empty()
    }
}

/// Per-pattern "did this directory match" results handed down to children
/// (patternmatcher's `MatchInfo`).
pub(crate) type MatchInfo = Vec<bool>;

/// The decision for one path during a walk.
pub(crate) struct Decision {
    pub(crate) excluded: bool,
    /// For a directory: do not even look inside.
    pub(crate) skip_dir: bool,
    pub(crate) info: MatchInfo,
}

impl IgnoreMatcher {
    /// A matcher that excludes nothing.
    pub fn empty() -> Self {
        Self::const_empty()
    }

    pub(crate) const fn const_empty() -> Self {
        IgnoreMatcher {
            patterns: Vec::new(),
            exclusions: false,
            only_prefix_exceptions: true,
            origin: None,
        }
    }

    /// Compiles patterns the way `patternmatcher.New` does (this is what
    /// `COPY --exclude=...` patterns go through): each is trimmed, cleaned
    /// like a path, a leading `!` marks an exception; blank ones are skipped.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Error> {
        Self::compile(patterns.iter().map(|p| p.as_ref().to_string()), None)
    }

    /// Parses the contents of a `.dockerignore` file: `#` comments (only at
    /// the very start of a line), blank lines, a UTF-8 BOM, a leading `/`
    /// (the context root) and `!` exceptions.
    pub fn from_dockerignore(contents: &[u8]) -> Result<Self, Error> {
        Self::from_dockerignore_at(contents, None)
    }

    fn from_dockerignore_at(contents: &[u8], origin: Option<PathBuf>) -> Result<Self, Error> {
        Self::compile(read_ignore_lines(contents), origin)
    }

    /// Loads the ignore file for a build the way BuildKit does: if the
    /// Dockerfile is given and `<Dockerfile>.dockerignore` exists next to
    /// it (e.g. `app.Dockerfile.dockerignore`), that file is used; else
    /// `<context>/.dockerignore`; else nothing is ignored.
    pub fn load(context_dir: &Path, dockerfile: Option<&Path>) -> Result<Self, Error> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            if let Some(name) = df.file_name() {
                let mut n = name.to_os_string();
                n.push(".dockerignore");
                candidates.push(df.with_file_name(n));
            }
        }
        candidates.push(context_dir.join(".dockerignore"));
        for path in candidates {
            match std::fs::read(&path) {
                Ok(bytes) => return Self::from_dockerignore_at(&bytes, Some(path)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(20) => continue, // ENOTDIR
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(Self::empty())
    }

    fn compile(
        patterns: impl Iterator<Item = String>,
        origin: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let origin_name = origin.as_ref().map_or_else(
            || "exclude patterns".to_string(),
            |p| p.display().to_string(),
        );
        let mut out = IgnoreMatcher {
            origin,
            ..Self::const_empty()
        };
        for raw in patterns {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let bad = |reason: &str| Error::InvalidPattern {
                pattern: raw.clone(),
                origin: origin_name.clone(),
                reason: reason.to_string(),
            };
            let cleaned = gomatch::clean(trimmed.as_bytes());
            // Cleaning cannot split a UTF-8 sequence: it only drops ASCII.
            let mut p = String::from_utf8(cleaned).map_err(|_| bad("not UTF-8"))?;
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(bad("illegal exclusion pattern: \"!\" (an exception needs a path after the `!`)"));
                }
                p.remove(0);
                out.exclusions = true;
            }
            if gomatch::validate(p.as_bytes()).is_err() {
                return Err(bad("syntax error in pattern (check `[...]` classes are closed and `\\` escapes something)"));
            }
            let pattern = Pattern::compile(p, exclusion).map_err(|e| bad(&e.0))?;
            if exclusion && has_pattern_chars(without_trailing_glob(&pattern.cleaned)) {
                out.only_prefix_exceptions = false;
            }
            out.patterns.push(pattern);
        }
        Ok(out)
    }

    /// True if there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The file the patterns came from, if any.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// The cleaned patterns, exceptions with their `!`.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.cleaned)
                } else {
                    p.cleaned.clone()
                }
            })
            .collect()
    }

    /// Whether `path` (slash-separated, relative to the root the patterns
    /// apply to; every ancestor taken as a directory) is left out, with the
    /// same answer the walk gives: an excluded ancestor excludes it unless
    /// an exception re-includes it.
    pub fn is_excluded(&self, path: &str) -> bool {
        self.is_excluded_bytes(path.as_bytes())
    }

    pub(crate) fn is_excluded_bytes(&self, path: &[u8]) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let cleaned = gomatch::clean(path);
        let rel: &[u8] = cleaned.strip_prefix(b"/").unwrap_or(&cleaned);
        if rel == b"." || rel.is_empty() {
            return false;
        }
        let mut info: Option<MatchInfo> = None;
        let mut end = 0;
        loop {
            let next = rel[end..].iter().position(|&b| b == b'/').map(|i| end + i);
            let prefix = &rel[..next.unwrap_or(rel.len())];
            let d = self.decide(prefix, info.as_deref(), next.is_some(), true);
            match next {
                None => return d.excluded,
                Some(_) if d.skip_dir => return true,
                Some(i) => {
                    info = Some(d.info);
                    end = i + 1;
                }
            }
        }
    }

    /// patternmatcher's `MatchesUsingParentResults` plus the decision to
    /// skip an excluded directory: with `prefix_skip` fsutil's rule for the
    /// context walk (skip unless a plain-path exception points inside);
    /// without it (COPY's own walk, which looks everywhere) only when there
    /// are no exceptions at all, where skipping cannot change the result.
    pub(crate) fn decide(
        &self,
        path: &[u8],
        parent: Option<&[bool]>,
        is_dir: bool,
        prefix_skip: bool,
    ) -> Decision {
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut m = parent.is_some_and(|p| p[i]);
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = pattern.matches(path);
                if !m && parent.is_none() {
                    m = parent_dirs(path).any(|d| pattern.matches(d));
                }
            }
            info[i] = m;
            if m {
                matched = !pattern.exclusion;
            }
        }
        let skip_dir = matched
            && is_dir
            && (!self.exclusions || prefix_skip && self.only_prefix_exceptions)
            && {
                if !self.exclusions {
                    true
                } else {
                    // Walk in only if some exception names a path inside.
                    !self.patterns.iter().filter(|p| p.exclusion).any(|p| {
                        let pat = without_trailing_glob(&p.cleaned).as_bytes();
                        (pat.len() > path.len() && pat.starts_with(path) && pat[path.len()] == b'/')
                            || pat == path
                    })
                }
            };
        Decision {
            excluded: matched,
            skip_dir,
            info,
        }
    }
}

/// The proper ancestors of a relative path, shortest first.
fn parent_dirs(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let parent_end = path.iter().rposition(|&b| b == b'/');
    path.iter()
        .enumerate()
        .filter(move |&(i, &b)| b == b'/' && Some(i) <= parent_end)
        .map(move |(i, _)| &path[..i])
}

fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

fn has_pattern_chars(p: &str) -> bool {
    p.contains(['*', '[', ']', '?', '^', '\\'])
}

/// `ignorefile.ReadAll`: one pattern per line; `#` starts a comment only
/// in the first column; `!` exceptions and a leading `/` are normalised
/// (`/foo` = `foo`).
fn read_ignore_lines(contents: &[u8]) -> impl Iterator<Item = String> + '_ {
    let contents = contents.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(contents);
    contents.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"#") {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let mut pattern = line.trim();
        if pattern.is_empty() {
            return None;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut out = String::new();
        if !pattern.is_empty() {
            let cleaned = String::from_utf8_lossy(&gomatch::clean(pattern.as_bytes())).into_owned();
            out = match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                _ => cleaned,
            };
        }
        Some(if invert { format!("!{out}") } else { out })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ignore_files_like_moby() {
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        let lines: Vec<String> = read_ignore_lines(content.as_bytes()).collect();
        assert_eq!(
            lines,
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
        // ...and a lone `!` is then refused by the matcher.
        let err = IgnoreMatcher::from_dockerignore(content.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("illegal exclusion pattern"),
            "{err}"
        );
    }

    #[test]
    fn bom_crlf_and_indented_comments() {
        let m = IgnoreMatcher::from_dockerignore(b"\xEF\xBB\xBFa\r\n  # not a comment\r\n./b/\r\n")
            .unwrap();
        assert_eq!(m.patterns(), ["a", "# not a comment", "b"]);
    }

    #[test]
    fn parent_dirs_are_proper_ancestors() {
        let v: Vec<&[u8]> = parent_dirs(b"a/b/c").collect();
        assert_eq!(v, [&b"a"[..], &b"a/b"[..]]);
        assert_eq!(parent_dirs(b"a").count(), 0);
    }
}
