//! Image references with Docker's grammar and normalisation:
//! `alpine` is `docker.io/library/alpine:latest`;
//! `host:port/a/b:tag@sha256:...` keeps everything it names.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::name::{validate_repository, validate_tag, NameError};

/// The registry of references without a host.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's API actually lives on.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image reference {0:?} has an invalid registry host {1:?}")]
    Host(String, String),
    #[error("image reference {0:?} must be lowercase (repository names cannot contain capitals)")]
    Uppercase(String),
    #[error("image reference {reference:?} is invalid: {source}")]
    Name {
        reference: String,
        source: NameError,
    },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (with port), e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/alpine`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn valid_dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `host[:port]`, the host being DNS labels, an IPv4 address or `[IPv6]`.
fn valid_host(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
        return port_ok && ip.parse::<std::net::Ipv6Addr>().is_ok();
    }
    match host.rsplit_once(':') {
        Some((name, port)) => valid_dns_name(name) && valid_port(port),
        None => valid_dns_name(host),
    }
}

impl ImageRef {
    /// Parses and normalises `s` the way the Docker CLI does.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let name_err = |source| ReferenceError::Name {
            reference: s.to_string(),
            source,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| name_err(e.into()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(t[1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            validate_tag(t).map_err(name_err)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if looks_like_host(first) => {
                if !valid_host(first) {
                    return Err(ReferenceError::Host(s.to_string(), first.to_string()));
                }
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_string()));
        }
        validate_repository(&repository).map_err(name_err)?;
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host to send API requests to (Docker Hub's API host differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker prints: `alpine:latest`, `user/app:1`.
    pub fn familiar(&self) -> String {
        let first = self.repository.split('/').next().unwrap_or_default();
        // Docker Hub names are shortened unless the short form would read as
        // another registry's (`docker.io/l.io/x` stays as it is).
        let mut s = if self.registry == DOCKER_HUB && !looks_like_host(first) {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The same reference with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(p("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(
            p("alpine:3.19").to_string(),
            "docker.io/library/alpine:3.19"
        );
        assert_eq!(p("user/app").to_string(), "docker.io/user/app:latest");
        assert_eq!(
            p("index.docker.io/library/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(p("localhost/app").registry, "localhost");
        assert_eq!(
            p("localhost:5000/a/b:t").to_string(),
            "localhost:5000/a/b:t"
        );
        assert_eq!(
            p("127.0.0.1:5000/test").to_string(),
            "127.0.0.1:5000/test:latest"
        );
        assert_eq!(p("[::1]:5000/test").registry, "[::1]:5000");
        assert_eq!(p("alpine").familiar(), "alpine:latest");
        // Found by fuzzing: a Hub repository whose first component looks
        // like a host keeps its registry in the familiar form.
        let r = p("docker.io/l.io/x");
        assert_eq!(r.familiar(), "docker.io/l.io/x:latest");
        assert_eq!(p(&r.familiar()), r);
        assert_eq!(p("library/a/b").familiar(), "library/a/b:latest");
        assert_eq!(p("alpine").api_host(), DOCKER_HUB_API);
    }

    #[test]
    fn tags_and_digests() {
        let d = Digest::sha256_of(b"x");
        let r = p(&format!("host:5000/a/b:tag@{d}"));
        assert_eq!(r.registry, "host:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.reference(), d.to_string());
        let r = p(&format!("alpine@{d}"));
        assert_eq!(r.tag, None, "a digest alone implies no tag");
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{d}"));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "Alpine",
            "a:b:c",
            "host:port/x",
            "a/../b",
            "a@sha256:short",
            "-host.com/x",
            "localhost:5000/a/b:",
            "a:.bad",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
