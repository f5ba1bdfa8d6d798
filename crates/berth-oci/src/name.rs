//! The distribution-spec grammar for repository names and tags.
//!
//! Names reach the filesystem only as keys of the metadata database, never as
//! paths, but they are still held to the grammar so that `..`, empty
//! components, upper case or control characters are refused with
//! `NAME_INVALID` before any handler sees them.

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (spec: 128 characters).
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name {0:?} is invalid: use lowercase path components [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'")]
    Repository(String),
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    RepositoryTooLong,
    #[error("tag {0:?} is invalid: use up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// Checks `name` against `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn validate_repository(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::RepositoryTooLong);
    }
    if name.is_empty() || !name.split('/').all(valid_component) {
        return Err(NameError::Repository(name.to_string()));
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && alnum(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        // separator: '.', '_', '__' or one or more '-'
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

/// Checks `tag` against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), NameError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::Tag(tag.to_string()))
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A reference containing ':' is a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_grammar() {
        for ok in [
            "a",
            "library/alpine",
            "a.b_c__d---e/f0",
            "nicholasdille/hello",
            "x/y/z/w",
        ] {
            assert!(validate_repository(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "a___b", "a.-b", "-a", "a-",
            "a b", "a\0b", "ä",
        ] {
            assert!(validate_repository(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_repository(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tag_grammar() {
        assert!(validate_tag("latest").is_ok());
        assert!(validate_tag("_x.Y-1").is_ok());
        assert!(validate_tag(&"a".repeat(128)).is_ok());
        for bad in ["", ".a", "-a", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reference_kinds() {
        assert_eq!(Reference::parse("v1").unwrap(), Reference::Tag("v1".into()));
        assert!(matches!(
            Reference::parse(&Digest::sha256_of(b"x").to_string()).unwrap(),
            Reference::Digest(_)
        ));
        assert!(Reference::parse("sha256:nothex").is_err());
    }
}
