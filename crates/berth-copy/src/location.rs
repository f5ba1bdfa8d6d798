//! Where images live, spelled like skopeo: `docker://REF` (or a bare REF) is
//! a registry, `oci:PATH[:TAG]` an OCI image layout, `local:REPO[:TAG|@DIGEST]`
//! the local store, `oci-archive:PATH[:TAG]` a tar of an OCI layout and
//! `docker-archive:PATH[:NAME:TAG]` a `docker save` tarball.

use std::fmt;
use std::path::PathBuf;

use berth_oci::{validate_repository, validate_tag, Digest, ImageRef};

/// A source or destination of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(ImageRef),
    Layout {
        path: PathBuf,
        tag: Option<String>,
    },
    Local {
        repo: String,
        reference: Option<String>,
    },
    /// A tar of an OCI layout.
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A `docker save` tarball; `reference` names the image (`RepoTags`).
    DockerArchive {
        path: PathBuf,
        reference: Option<ImageRef>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("invalid location {input:?}: {reason}")]
pub struct LocationError {
    pub input: String,
    pub reason: String,
}

impl Location {
    /// Parses a location; a string without a known transport is a registry
    /// reference.
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        let err = |reason: String| LocationError {
            input: s.to_string(),
            reason,
        };
        if let Some(r) = s.strip_prefix("docker://") {
            return ImageRef::parse(r)
                .map(Location::Registry)
                .map_err(|e| err(e.to_string()));
        }
        for (prefix, archive) in [("oci:", false), ("oci-archive:", true)] {
            let Some(rest) = s.strip_prefix(prefix) else {
                continue;
            };
            // The tag follows the last ':' unless that ':' is part of the path.
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, Some(t)),
                _ => (rest, None),
            };
            if path.is_empty() {
                return Err(err(format!("the path is empty ({prefix}PATH[:TAG])")));
            }
            if let Some(t) = tag {
                validate_tag(t).map_err(|e| err(format!("tag {t:?}: {e}")))?;
            }
            let (path, tag) = (PathBuf::from(path), tag.map(str::to_string));
            return Ok(if archive {
                Location::OciArchive { path, tag }
            } else {
                Location::Layout { path, tag }
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            // Like skopeo: the path ends at the first ':'.
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) => (p, Some(r)),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(err(
                    "the path is empty (docker-archive:PATH[:NAME:TAG])".into()
                ));
            }
            let reference = match reference {
                Some(r) => {
                    let r = ImageRef::parse(r).map_err(|e| err(format!("{r:?}: {e}")))?;
                    if r.digest.is_some() {
                        return Err(err(
                            "a docker-archive names images by NAME:TAG, not digest".into()
                        ));
                    }
                    Some(r)
                }
                None => None,
            };
            return Ok(Location::DockerArchive {
                path: PathBuf::from(path),
                reference,
            });
        }
        if let Some(rest) = s.strip_prefix("local:") {
            return Location::local(rest).map_err(err);
        }
        ImageRef::parse(s).map(Location::Registry).map_err(|e| {
            err(format!(
                "{e} (locations are REF, docker://REF, oci:PATH[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:REF] or local:REPO[:TAG])"
            ))
        })
    }

    /// `REPO[:TAG|@DIGEST]` in the local store.
    pub fn local(s: &str) -> Result<Location, String> {
        let (repo, reference) = if let Some((r, d)) = s.split_once('@') {
            d.parse::<Digest>()
                .map_err(|e| format!("digest {d:?}: {e}"))?;
            (r, Some(d.to_string()))
        } else {
            match s.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => {
                    validate_tag(t).map_err(|e| format!("tag {t:?}: {e}"))?;
                    (r, Some(t.to_string()))
                }
                _ => (s, None),
            }
        };
        validate_repository(repo).map_err(|e| format!("repository {repo:?}: {e}"))?;
        Ok(Location::Local {
            repo: repo.to_string(),
            reference,
        })
    }

    /// The tag this location names, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Location::Registry(r) => match (&r.digest, &r.tag) {
                (Some(_), _) => None,
                (None, Some(t)) => Some(t),
                (None, None) => Some("latest"),
            },
            Location::Layout { tag, .. } | Location::OciArchive { tag, .. } => tag.as_deref(),
            Location::DockerArchive { reference, .. } => reference
                .as_ref()
                .map(|r| r.tag.as_deref().unwrap_or("latest")),
            Location::Local { reference, .. } => match reference {
                Some(r) if r.contains(':') => None,
                Some(r) => Some(r),
                None => Some("latest"),
            },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => write!(f, "docker://{}", r.familiar()),
            Location::Layout { path, tag } => {
                write!(f, "oci:{}", path.display())?;
                match tag {
                    Some(t) => write!(f, ":{t}"),
                    None => Ok(()),
                }
            }
            Location::Local { repo, reference } => match reference {
                Some(r) if r.contains(':') => write!(f, "local:{repo}@{r}"),
                Some(r) => write!(f, "local:{repo}:{r}"),
                None => write!(f, "local:{repo}"),
            },
            Location::OciArchive { path, tag } => {
                write!(f, "oci-archive:{}", path.display())?;
                match tag {
                    Some(t) => write!(f, ":{t}"),
                    None => Ok(()),
                }
            }
            Location::DockerArchive { path, reference } => {
                write!(f, "docker-archive:{}", path.display())?;
                match reference {
                    Some(r) => write!(f, ":{}", r.familiar()),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_transport() {
        match Location::parse("docker://localhost:5000/a/b:1").unwrap() {
            Location::Registry(r) => {
                assert_eq!(r.registry, "localhost:5000");
                assert_eq!(r.repository, "a/b");
                assert_eq!(r.tag.as_deref(), Some("1"));
            }
            other => panic!("{other:?}"),
        }
        match Location::parse("alpine").unwrap() {
            Location::Registry(r) => assert_eq!(r.repository, "library/alpine"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Location::parse("oci:/tmp/x:v1").unwrap(),
            Location::Layout {
                path: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Location::parse("oci:/tmp/x").unwrap(),
            Location::Layout {
                path: "/tmp/x".into(),
                tag: None
            }
        );
        assert_eq!(
            Location::parse("local:a/b:2").unwrap(),
            Location::Local {
                repo: "a/b".into(),
                reference: Some("2".into())
            }
        );
        assert_eq!(Location::parse("local:a/b").unwrap().tag(), Some("latest"));
        assert!(Location::parse("local:A").is_err());
        assert!(Location::parse("oci:").is_err());
        assert!(Location::parse("oci:/x:bad tag").is_err());
        assert_eq!(
            Location::parse("oci-archive:/tmp/x.tar:v1").unwrap(),
            Location::OciArchive {
                path: "/tmp/x.tar".into(),
                tag: Some("v1".into())
            }
        );
        match Location::parse("docker-archive:/tmp/x.tar:localhost:5000/a:1").unwrap() {
            Location::DockerArchive { path, reference } => {
                assert_eq!(path, PathBuf::from("/tmp/x.tar"));
                assert_eq!(reference.unwrap().familiar(), "localhost:5000/a:1");
            }
            other => panic!("{other:?}"),
        }
        assert!(Location::parse("docker-archive:/x.tar:a@sha256:0").is_err());
        assert!(Location::parse("docker-archive:").is_err());
    }
}
