//! Content discovery: tag listing with `n`/`last` pagination and `Link`
//! headers, and the catalog.

mod common;

use common::*;
use serde_json::json;

const NS: &str = "conformance/primary";

/// Pushes one image and tags it with each of `tags`.
async fn tagged(srv: &Server, repo: &str, tags: &[&str]) {
    let img = srv.push_image(repo, tags[0], 1).await;
    for t in &tags[1..] {
        srv.push_manifest(repo, t, OCI_MANIFEST, &img.manifest)
            .await;
    }
}

/// v1.0.1 "Content Discovery", with the Push workflow's leftover
/// `emptylayer` tag present, as in a real run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_discovery_workflow() {
    let srv = Server::start().await;
    tagged(
        &srv,
        NS,
        &["emptylayer", "test0", "test1", "test2", "test3"],
    )
    .await;

    let tag_list = srv.tags(NS).await;
    assert_eq!(tag_list, ["emptylayer", "test0", "test1", "test2", "test3"]);
    let num_results = tag_list.len() / 2;

    let r = srv
        .get(&format!("/v2/{NS}/tags/list?n={num_results}"))
        .await;
    r.status(200);
    assert_eq!(r.tags(), ["emptylayer", "test0"]);
    assert_eq!(
        r.next_link().as_deref(),
        Some("/v2/conformance/primary/tags/list?last=test0&n=2")
    );

    let last = &r.tags()[num_results - 1];
    let r = srv
        .get(&format!("/v2/{NS}/tags/list?last={last}&n={num_results}"))
        .await;
    r.status(200);
    assert_eq!(r.tags(), ["test1", "test2"]);
    assert_eq!(
        r.next_link().as_deref(),
        Some("/v2/conformance/primary/tags/list?last=test2&n=2")
    );
    let r = srv.get(&r.next_link().unwrap()).await;
    r.status(200);
    assert_eq!(r.tags(), ["test3"]);
    assert_eq!(r.next_link(), None, "no Link after the last page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_are_in_lexical_order() {
    let srv = Server::start().await;
    let pushed = [
        "v2", "latest", "v10", "1.0-rc1", "_tmp", "1.0", "v1", "a-b", "a.b", "a_b",
    ];
    tagged(&srv, "order", &pushed).await;
    let mut sorted: Vec<String> = pushed.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        ["1.0", "1.0-rc1", "_tmp", "a-b", "a.b", "a_b", "latest", "v1", "v10", "v2"]
    );
    let r = srv.get("/v2/order/tags/list").await;
    r.status(200);
    assert_eq!(r.h("content-type"), "application/json");
    assert_eq!(r.json(), json!({ "name": "order", "tags": sorted }));
    assert_eq!(r.header("link"), None);
}

/// The spec says "lexical order (i.e. case-insensitive alphanumeric order)".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "tags are listed in byte order (as distribution does); the spec text asks for case-insensitive order: design question"]
async fn tags_are_in_case_insensitive_order() {
    let srv = Server::start().await;
    tagged(&srv, "case", &["B", "a", "C", "b"]).await;
    assert_eq!(srv.tags("case").await, ["a", "B", "b", "C"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paginating_by_link_visits_every_tag_once() {
    let srv = Server::start().await;
    let all: Vec<String> = (0..23).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    tagged(&srv, "pages", &refs).await;

    for n in [1usize, 2, 5, 22, 23] {
        let mut seen = Vec::new();
        let mut next = Some(format!("/v2/pages/tags/list?n={n}"));
        let mut pages = 0;
        while let Some(url) = next {
            let r = srv.get(&url).await;
            r.status(200);
            let tags = r.tags();
            next = r.next_link();
            if next.is_some() {
                // A page followed by a Link is full.
                assert_eq!(tags.len(), n, "n={n}");
                assert_eq!(
                    next.as_deref().unwrap(),
                    format!("/v2/pages/tags/list?last={}&n={n}", tags[n - 1])
                );
            }
            assert!(!tags.is_empty(), "n={n}: an empty page");
            seen.extend(tags);
            pages += 1;
        }
        assert_eq!(seen, all, "n={n}");
        assert_eq!(pages, all.len().div_ceil(n), "n={n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_and_last_edge_cases() {
    let srv = Server::start().await;
    tagged(&srv, "edge", &["a", "b", "c", "d"]).await;
    let list = |q: &'static str| {
        let api = srv.api();
        async move {
            let r = api.get(&format!("/v2/edge/tags/list?{q}")).await;
            r.status(200);
            assert_eq!(r.json()["name"], "edge");
            (r.tags(), r.header("link").map(str::to_string))
        }
    };
    // n=0: an empty list and no Link (spec: MUST).
    assert_eq!(list("n=0").await, (vec![], None));
    assert_eq!(list("n=0&last=a").await, (vec![], None));
    // n as large as or larger than the rest: everything, no Link.
    assert_eq!(list("n=4").await.0, ["a", "b", "c", "d"]);
    assert_eq!(list("n=4").await.1, None);
    assert_eq!(list("n=1000").await.1, None);
    // n one short: a Link.
    let (tags, link) = list("n=3").await;
    assert_eq!(tags, ["a", "b", "c"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/edge/tags/list?last=c&n=3>; rel=\"next\"")
    );
    // last without n: everything after it.
    assert_eq!(list("last=b").await, (vec!["c".into(), "d".into()], None));
    // last need not be an existing tag.
    assert_eq!(list("last=bb").await.0, ["c", "d"]);
    assert_eq!(list("last=0").await.0, ["a", "b", "c", "d"]);
    assert_eq!(list("last=d").await, (vec![], None));
    assert_eq!(list("last=zzz&n=2").await, (vec![], None));
    assert_eq!(list("last=a&n=2").await.0, ["b", "c"]);
    // Empty parameters are ignored.
    assert_eq!(list("n=&last=").await.0, ["a", "b", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_n_is_refused() {
    let srv = Server::start().await;
    tagged(&srv, "bad", &["a"]).await;
    for q in [
        "n=abc",
        "n=-1",
        "n=1.5",
        "n=%20",
        "n=99999999999999999999999",
    ] {
        srv.get(&format!("/v2/bad/tags/list?{q}"))
            .await
            .error(400, "UNSUPPORTED");
        srv.get(&format!("/v2/_catalog?{q}"))
            .await
            .error(400, "UNSUPPORTED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_list_of_repository_without_tags() {
    let srv = Server::start().await;
    // A repository that only has a blob, and one whose tags were deleted.
    srv.push_blob("blobonly", b"x").await;
    let r = srv.get("/v2/blobonly/tags/list").await;
    r.status(200);
    assert_eq!(r.json(), json!({ "name": "blobonly", "tags": [] }));

    srv.push_image("untagged", "v1", 1).await;
    srv.delete("/v2/untagged/manifests/v1").await.status(202);
    let r = srv.get("/v2/untagged/tags/list").await;
    r.status(200);
    assert_eq!(r.json(), json!({ "name": "untagged", "tags": [] }));

    // A repository that never existed.
    srv.get("/v2/never/tags/list")
        .await
        .error(404, "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_of_one_repository_only() {
    let srv = Server::start().await;
    // Names that share prefixes must not leak into each other's lists.
    tagged(&srv, "a", &["one"]).await;
    tagged(&srv, "a/b", &["two"]).await;
    tagged(&srv, "a-b", &["three"]).await;
    tagged(&srv, "ab", &["four"]).await;
    assert_eq!(srv.tags("a").await, ["one"]);
    assert_eq!(srv.tags("a/b").await, ["two"]);
    assert_eq!(srv.tags("a-b").await, ["three"]);
    assert_eq!(srv.tags("ab").await, ["four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_lists_and_paginates() {
    let srv = Server::start().await;
    let r = srv.get("/v2/_catalog").await;
    r.status(200);
    assert_eq!(r.json(), json!({ "repositories": [] }));

    for repo in ["c", "a/b", "b", "a", "a/b/c"] {
        srv.push_blob(repo, repo.as_bytes()).await;
    }
    let all = ["a", "a/b", "a/b/c", "b", "c"];
    let r = srv.get("/v2/_catalog").await;
    r.status(200);
    assert_eq!(r.h("content-type"), "application/json");
    assert_eq!(r.json(), json!({ "repositories": all }));
    assert_eq!(r.header("link"), None);

    let r = srv.get("/v2/_catalog?n=2").await;
    r.status(200);
    assert_eq!(r.json()["repositories"], json!(["a", "a/b"]));
    assert_eq!(r.next_link().as_deref(), Some("/v2/_catalog?last=a/b&n=2"));
    let r = srv.get(&r.next_link().unwrap()).await;
    assert_eq!(r.json()["repositories"], json!(["a/b/c", "b"]));
    let r = srv.get(&r.next_link().unwrap()).await;
    assert_eq!(r.json()["repositories"], json!(["c"]));
    assert_eq!(r.next_link(), None);

    let r = srv.get("/v2/_catalog?n=0").await;
    assert_eq!(r.json()["repositories"], json!([]));
    assert_eq!(r.header("link"), None);
    let r = srv.get("/v2/_catalog?last=a%2Fb").await;
    assert_eq!(r.json()["repositories"], json!(["a/b/c", "b", "c"]));
}
