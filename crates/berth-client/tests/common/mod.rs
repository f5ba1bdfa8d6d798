//! Shared test helpers: a real `berth serve` in-process, test images, and
//! stream helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use berth_client::{Blob, ClientConfig, RegistryClient};
use berth_oci::Digest;
use berth_registry::{Registry, Settings};
use berth_store::{Access, Store};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `data` as a stream of `chunk`-sized pieces.
pub fn chunks(
    data: &[u8],
    chunk: usize,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(pieces)
}

/// Reads a whole download.
pub async fn collect(blob: Blob) -> berth_client::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut s = blob.stream;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A small image: config + one layer + manifest.
pub struct TestImage {
    pub config: Bytes,
    pub layer: Bytes,
    pub manifest: Bytes,
}

impl TestImage {
    pub fn new(seed: u64, layer_len: usize) -> TestImage {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#
        ));
        let layer = Bytes::from(noise(seed, layer_len));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": Digest::sha256_of(&config).to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": Digest::sha256_of(&layer).to_string(),
                "size": layer.len(),
            }],
        });
        TestImage {
            config,
            layer,
            manifest: Bytes::from(serde_json::to_vec(&manifest).unwrap()),
        }
    }

    pub fn layer_digest(&self) -> Digest {
        Digest::sha256_of(&self.layer)
    }

    pub fn manifest_digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }

    /// Pushes blobs (skipping those present) and the manifest under `tag`.
    pub async fn push(
        &self,
        client: &RegistryClient,
        repo: &str,
        tag: &str,
    ) -> berth_client::Result<Digest> {
        for blob in [&self.config, &self.layer] {
            let digest = Digest::sha256_of(blob);
            if client.blob_exists(repo, &digest).await?.is_none() {
                client
                    .push_blob(repo, &digest, blob.len() as u64, chunks(blob, 64 << 10))
                    .await?;
            }
        }
        client
            .put_manifest(repo, tag, OCI_MANIFEST, self.manifest.clone())
            .await
    }
}

/// Fast retries for tests.
pub fn config() -> ClientConfig {
    ClientConfig {
        retry_delay: Duration::from_millis(10),
        ..ClientConfig::default()
    }
}

/// `berth serve` on 127.0.0.1:0 over a store in a temp dir.
pub struct BerthServe {
    pub addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl BerthServe {
    pub async fn start() -> BerthServe {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Access::Shared).expect("open store"));
        let registry = Arc::new(Registry {
            store,
            settings: Settings::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(berth_registry::serve(listener, registry, async {
            let _ = rx.await;
        }));
        BerthServe {
            addr,
            shutdown: Some(tx),
            _dir: dir,
        }
    }

    pub fn registry(&self) -> String {
        self.addr.to_string()
    }

    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.registry(), config()).unwrap()
    }
}

impl Drop for BerthServe {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
