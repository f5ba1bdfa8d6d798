//! Just enough of a manifest to validate and index it: its kind, media type
//! and the descriptors it references. The bytes themselves are stored and
//! served untouched, so nothing here re-serialises a manifest.

use serde::Deserialize;

use crate::digest::Digest;
use crate::media_type as mt;

/// A content descriptor as found inside manifests and indexes.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image (or artifact) manifest: config plus layers.
    Image,
    /// An index / manifest list: references other manifests.
    Index,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2, got {0}")]
    SchemaVersion(i64),
    #[error("Docker schema 1 manifests are not supported; push schema 2 or OCI manifests")]
    Schema1,
    #[error("manifest media type {0:?} is not supported; use an OCI image manifest or index, or a Docker schema 2 manifest or manifest list")]
    UnknownMediaType(String),
    #[error("manifest mediaType field {field:?} does not match the Content-Type {content_type:?}")]
    MediaTypeMismatch { field: String, content_type: String },
    #[error("manifest of type {0} is missing its {1:?} field")]
    MissingField(String, &'static str),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A manifest parsed for validation and indexing.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    /// The effective media type: the Content-Type it was pushed with, or its
    /// `mediaType` field.
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => Some(ManifestKind::Image),
        mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

fn is_schema1(media_type: &str) -> bool {
    media_type == mt::DOCKER_SCHEMA1 || media_type == mt::DOCKER_SCHEMA1_SIGNED
}

impl ParsedManifest {
    /// Parses `bytes` pushed with the given Content-Type (if any).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        // serde_json does not check the UTF-8 of values it skips (unknown
        // fields), so check the whole text first: a manifest must be JSON.
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ManifestError::Json(format!("manifest is not UTF-8: {e}")))?;
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        let content_type = content_type.map(mt::essence).filter(|c| !c.is_empty());
        let field = raw.media_type.as_deref();

        if content_type.is_some_and(is_schema1)
            || field.is_some_and(is_schema1)
            || raw.schema_version == Some(1)
        {
            return Err(ManifestError::Schema1);
        }
        let media_type = match (content_type, field) {
            (Some(ct), Some(f)) if kind_of(ct).is_some() && ct != f => {
                return Err(ManifestError::MediaTypeMismatch {
                    field: f.to_string(),
                    content_type: ct.to_string(),
                })
            }
            (Some(ct), _) if kind_of(ct).is_some() => ct.to_string(),
            (_, Some(f)) if kind_of(f).is_some() => f.to_string(),
            // OCI made `mediaType` optional; infer it from the structure only
            // when nothing else names a type.
            (None | Some("application/json" | "application/octet-stream"), None) => {
                if raw.manifests.is_some() {
                    mt::OCI_INDEX.to_string()
                } else {
                    mt::OCI_MANIFEST.to_string()
                }
            }
            (ct, f) => {
                return Err(ManifestError::UnknownMediaType(
                    ct.or(f).unwrap_or_default().to_string(),
                ))
            }
        };
        match raw.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::MissingField(media_type, "schemaVersion")),
        }
        let kind = kind_of(&media_type).expect("media type resolved to a known kind");
        match kind {
            ManifestKind::Image => {
                if raw.config.is_none() {
                    return Err(ManifestError::MissingField(media_type, "config"));
                }
                if raw.layers.is_none() {
                    return Err(ManifestError::MissingField(media_type, "layers"));
                }
            }
            ManifestKind::Index => {
                if raw.manifests.is_none() {
                    return Err(ManifestError::MissingField(media_type, "manifests"));
                }
            }
        }
        Ok(ParsedManifest {
            kind,
            media_type,
            artifact_type: raw.artifact_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            annotations: raw.annotations,
        })
    }

    /// Blobs (config and layers) this manifest needs in its repository.
    /// Non-distributable layers are skipped: they may live elsewhere.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(
            self.layers
                .iter()
                .filter(|d| !mt::is_non_distributable(&d.media_type)),
        )
    }

    /// The artifact type the referrers API reports for this manifest:
    /// `artifactType`, else the config's media type (image manifests only).
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or_else(|| match self.kind {
            ManifestKind::Image => self.config.as_ref().map(|c| c.media_type.as_str()),
            ManifestKind::Index => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(data: &[u8]) -> String {
        Digest::sha256_of(data).to_string()
    }

    #[test]
    fn oci_image_manifest() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            mt::OCI_MANIFEST,
            mt::OCI_CONFIG,
            d(b"{}"),
            d(b"abc")
        );
        let m = ParsedManifest::parse(body.as_bytes(), Some(mt::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(m.effective_artifact_type(), Some(mt::OCI_CONFIG));
    }

    #[test]
    fn index_without_media_type_field_uses_content_type() {
        let body = br#"{"schemaVersion":2,"manifests":[]}"#;
        let m = ParsedManifest::parse(body, Some(mt::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.media_type, mt::DOCKER_MANIFEST_LIST);
        let m = ParsedManifest::parse(body, None).unwrap();
        assert_eq!(m.media_type, mt::OCI_INDEX);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            ParsedManifest::parse(b"{", None),
            Err(ManifestError::Json(_))
        ));
        assert_eq!(
            ParsedManifest::parse(br#"{"schemaVersion":1}"#, None).unwrap_err(),
            ManifestError::Schema1
        );
        assert!(matches!(
            ParsedManifest::parse(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some(mt::OCI_MANIFEST)
            ),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            ParsedManifest::parse(
                br#"{"schemaVersion":2,"layers":[]}"#,
                Some(mt::OCI_MANIFEST)
            ),
            Err(ManifestError::MissingField(_, "config"))
        ));
        assert!(matches!(
            ParsedManifest::parse(
                br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#,
                Some(mt::OCI_MANIFEST)
            ),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":2}"#, Some("text/plain")),
            Err(ManifestError::UnknownMediaType(_))
        ));
    }

    /// Found by fuzzing: invalid UTF-8 inside a field berth does not read
    /// (here `name`) was skipped unchecked, so non-JSON bytes were accepted.
    #[test]
    fn refuses_invalid_utf8_in_unknown_fields() {
        let mut body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"name":"XX"}}"#,
            mt::OCI_INDEX
        )
        .into_bytes();
        let at = body.windows(2).position(|w| w == b"XX").unwrap();
        body[at] = 0xff;
        body[at + 1] = 0xfe;
        assert!(matches!(
            ParsedManifest::parse(&body, None),
            Err(ManifestError::Json(_))
        ));
        // The same manifest with valid text is fine.
        body[at] = b'a';
        body[at + 1] = b'b';
        assert!(ParsedManifest::parse(&body, None).is_ok());
    }
}
