//! The referrers API (distribution-spec v1.1): `OCI-Subject` on push, the
//! listing and its `artifactType` filter.

mod common;

use common::*;
use serde_json::{json, Value};

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";

/// An artifact manifest (empty config) for `subject`.
fn artifact(
    subject: &Image,
    artifact_type: Option<&str>,
    annotations: Value,
    layer: &[u8],
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor("application/vnd.example.data", layer)],
        "subject": descriptor(OCI_MANIFEST, &subject.manifest),
        "annotations": annotations,
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = t.into();
    }
    serde_json::to_vec(&m).unwrap()
}

/// Pushes a referrer manifest by digest, checking the `OCI-Subject` answer.
async fn push_referrer(srv: &Server, repo: &str, bytes: &[u8], subject: &str) -> String {
    let d = sha(bytes);
    let r = srv.put_manifest(repo, &d, OCI_MANIFEST, bytes).await;
    r.status(201);
    assert_eq!(r.h("oci-subject"), subject);
    assert_eq!(r.h("docker-content-digest"), d);
    d
}

async fn push_layers(srv: &Server, repo: &str, blobs: &[&[u8]]) {
    for b in blobs {
        srv.push_blob(repo, b).await;
    }
}

/// GET referrers, checking the response shape; returns the descriptors.
async fn referrers(srv: &Server, repo: &str, subject: &str, filter: Option<&str>) -> Vec<Value> {
    let mut path = format!("/v2/{repo}/referrers/{subject}");
    if let Some(f) = filter {
        path.push_str(&format!("?artifactType={}", encode(f)));
    }
    let r = srv.get(&path).await;
    r.status(200);
    assert_eq!(r.h("content-type"), OCI_INDEX);
    assert_eq!(
        r.header("oci-filters-applied"),
        filter.map(|_| "artifactType"),
        "OCI-Filters-Applied"
    );
    let body = r.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let mut list = body["manifests"].as_array().expect("manifests").clone();
    list.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    list
}

/// Percent-encodes a query value (as Go's `url.Values.Encode` does, so a
/// `+` is `%2B`, not a space).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_are_listed_and_filtered() {
    let srv = Server::start().await;
    let repo = "ref/app";
    let img = srv.push_image(repo, "v1", 1).await;
    push_layers(&srv, repo, &[b"{}", b"sbom data", b"sig data"]).await;

    let sbom = artifact(
        &img,
        Some(SBOM),
        json!({"org.example.sbom.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
        b"sbom data",
    );
    let sig = artifact(
        &img,
        Some(SIG),
        json!({"org.example.fingerprint": "abcd"}),
        b"sig data",
    );
    let sbom_d = push_referrer(&srv, repo, &sbom, &img.digest).await;
    let sig_d = push_referrer(&srv, repo, &sig, &img.digest).await;

    let sbom_desc = json!({
        "mediaType": OCI_MANIFEST,
        "digest": sbom_d,
        "size": sbom.len(),
        "artifactType": SBOM,
        "annotations": {"org.example.sbom.format": "json", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    });
    let sig_desc = json!({
        "mediaType": OCI_MANIFEST,
        "digest": sig_d,
        "size": sig.len(),
        "artifactType": SIG,
        "annotations": {"org.example.fingerprint": "abcd"},
    });
    assert_eq!(
        referrers(&srv, repo, &img.digest, None).await,
        sorted(vec![sbom_desc.clone(), sig_desc.clone()])
    );
    assert_eq!(
        referrers(&srv, repo, &img.digest, Some(SBOM)).await,
        vec![sbom_desc]
    );
    assert_eq!(
        referrers(&srv, repo, &img.digest, Some(SIG)).await,
        vec![sig_desc.clone()]
    );
    assert_eq!(
        referrers(&srv, repo, &img.digest, Some("application/vnd.none")).await,
        Vec::<Value>::new()
    );

    // The referrers themselves are ordinary manifests.
    let r = srv.get(&format!("/v2/{repo}/manifests/{sbom_d}")).await;
    r.status(200);
    assert_eq!(r.body, sbom);

    // Deleting a referrer removes it from the list.
    srv.delete(&format!("/v2/{repo}/manifests/{sbom_d}"))
        .await
        .status(202);
    assert_eq!(
        referrers(&srv, repo, &img.digest, None).await,
        vec![sig_desc]
    );
    srv.delete(&format!("/v2/{repo}/manifests/{sig_d}"))
        .await
        .status(202);
    assert_eq!(
        referrers(&srv, repo, &img.digest, None).await,
        Vec::<Value>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_subject_gives_an_empty_index() {
    let srv = Server::start().await;
    let img = srv.push_image("known", "v1", 1).await;
    let nothing = sha(b"nothing");
    // Known repository, subject without referrers, unknown subject.
    assert!(referrers(&srv, "known", &img.digest, None).await.is_empty());
    assert!(referrers(&srv, "known", &nothing, None).await.is_empty());
    assert!(referrers(&srv, "known", &nothing, Some(SBOM))
        .await
        .is_empty());
    // Never 404, even for a repository that does not exist.
    assert!(referrers(&srv, "never/pushed", &nothing, None)
        .await
        .is_empty());
    // A malformed digest is a bad request.
    srv.get("/v2/known/referrers/sha256:nothex")
        .await
        .error(400, "DIGEST_INVALID");
    srv.get("/v2/known/referrers/latest")
        .await
        .error(400, "DIGEST_INVALID");
}

/// A referrer may be pushed before its subject exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrer_before_its_subject() {
    let srv = Server::start().await;
    let img = Image::new(7);
    push_layers(&srv, "early", &[b"{}", b"x"]).await;
    let art = artifact(&img, Some(SBOM), json!({"k": "v"}), b"x");
    let d = push_referrer(&srv, "early", &art, &img.digest).await;
    let list = referrers(&srv, "early", &img.digest, None).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], d);
    // Then the subject arrives; the referrer is still listed.
    srv.push_blob("early", &img.config).await;
    for l in &img.layers {
        srv.push_blob("early", l).await;
    }
    srv.push_manifest("early", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(referrers(&srv, "early", &img.digest, None).await, list);
}

/// Without `artifactType`, an image manifest is reported with its config's
/// media type; an index gets no `artifactType` at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifact_type_fallbacks() {
    let srv = Server::start().await;
    let repo = "fallback";
    let img = srv.push_image(repo, "v1", 1).await;
    let cfg = br#"{"signature":"yes"}"#;
    push_layers(&srv, repo, &[cfg, b"payload"]).await;

    // Image manifest, no artifactType, a custom config type, no annotations.
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.sig.config.v1+json", cfg),
        "layers": [descriptor("application/octet-stream", b"payload")],
        "subject": descriptor(OCI_MANIFEST, &img.manifest),
    }))
    .unwrap();
    let md = push_referrer(&srv, repo, &m, &img.digest).await;

    // An index referring to the image, without artifactType, pushed by tag.
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &img.manifest)],
        "subject": descriptor(OCI_MANIFEST, &img.manifest),
        "annotations": {"a": "b"},
    }))
    .unwrap();
    let r = srv.put_manifest(repo, "idx", OCI_INDEX, &idx).await;
    r.status(201);
    assert_eq!(r.h("oci-subject"), img.digest);
    // An index with an artifactType.
    let idx2 = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [],
        "subject": descriptor(OCI_MANIFEST, &img.manifest),
    }))
    .unwrap();
    let r = srv.put_manifest(repo, "idx2", OCI_INDEX, &idx2).await;
    r.status(201);

    let list = referrers(&srv, repo, &img.digest, None).await;
    assert_eq!(
        list,
        sorted(vec![
            json!({
                "mediaType": OCI_MANIFEST,
                "digest": md,
                "size": m.len(),
                "artifactType": "application/vnd.example.sig.config.v1+json",
            }),
            json!({
                "mediaType": OCI_INDEX,
                "digest": sha(&idx),
                "size": idx.len(),
                "annotations": {"a": "b"},
            }),
            json!({
                "mediaType": OCI_INDEX,
                "digest": sha(&idx2),
                "size": idx2.len(),
                "artifactType": "application/vnd.example.bundle",
            }),
        ])
    );
    // Filtering uses the same effective type.
    let only = referrers(
        &srv,
        repo,
        &img.digest,
        Some("application/vnd.example.sig.config.v1+json"),
    )
    .await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["digest"], md);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_are_per_repository_and_not_duplicated() {
    let srv = Server::start().await;
    let img = srv.push_image("r1", "v1", 1).await;
    srv.push_image("r2", "v1", 1).await;
    for repo in ["r1", "r2"] {
        push_layers(&srv, repo, &[b"{}", b"d"]).await;
    }
    let art = artifact(&img, Some(SIG), json!({}), b"d");
    push_referrer(&srv, "r1", &art, &img.digest).await;
    // Pushed again, by tag this time: still one entry.
    let r = srv.put_manifest("r1", "sig", OCI_MANIFEST, &art).await;
    r.status(201);
    assert_eq!(r.h("oci-subject"), img.digest);
    assert_eq!(referrers(&srv, "r1", &img.digest, None).await.len(), 1);
    assert!(referrers(&srv, "r2", &img.digest, None).await.is_empty());

    // Pushed to r2 as well, then deleted from r1: r2 keeps it.
    push_referrer(&srv, "r2", &art, &img.digest).await;
    srv.delete(&format!("/v2/r1/manifests/{}", sha(&art)))
        .await
        .status(202);
    assert!(referrers(&srv, "r1", &img.digest, None).await.is_empty());
    assert_eq!(referrers(&srv, "r2", &img.digest, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_without_subject_have_no_oci_subject() {
    let srv = Server::start().await;
    let img = Image::new(1);
    srv.push_blob("n", &img.config).await;
    for l in &img.layers {
        srv.push_blob("n", l).await;
    }
    let r = srv
        .put_manifest("n", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    r.status(201);
    assert!(r.header("oci-subject").is_none());
}
