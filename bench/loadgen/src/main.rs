//! Load generator for `bench/registry.sh`: many concurrent clients pushing
//! small images to an OCI distribution registry, the way a real client does.
//!
//! For every blob (each layer, then the config): `HEAD /v2/<repo>/blobs/<d>`
//! (expected 404), `POST /v2/<repo>/blobs/uploads/` (202 + Location), then a
//! monolithic `PUT <location>?digest=<d>` with the body (201). Then the
//! manifest is pushed by tag with `PUT /v2/<repo>/manifests/<tag>` (201).
//!
//! All content (unique random layers, configs, manifests and their digests)
//! is generated before the clock starts, so only the registry's work (and the
//! client's HTTP work) is timed. Prints one JSON object on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use sha2::{Digest as _, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Registry load generator for bench/registry.sh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push small images from many concurrent clients; prints a JSON summary
    PushImages(PushArgs),
}

#[derive(clap::Args, Clone)]
struct PushArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long)]
    registry: String,
    /// Concurrent clients (each has its own connection)
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Images in total, split over the clients (see --per-client)
    #[arg(long, default_value_t = 200)]
    images: usize,
    /// Treat --images as the count for each client instead of the total
    #[arg(long)]
    per_client: bool,
    /// Layers per image
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// Smallest layer in bytes
    #[arg(long, default_value_t = 1024)]
    min_size: usize,
    /// Largest layer in bytes
    #[arg(long, default_value_t = 16 * 1024)]
    max_size: usize,
    /// Repository prefix; client i pushes to <prefix>/c<i>, image j as tag i<j>
    #[arg(long, default_value = "loadgen")]
    repo_prefix: String,
    /// Seed for the content (default: from the clock, so every run is unique)
    #[arg(long)]
    seed: Option<u64>,
}

/// splitmix64: fast, good enough to make every layer unique.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

fn sha256(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

struct Blob {
    digest: String,
    data: Bytes,
}

struct Image {
    repo: String,
    tag: String,
    /// Layers, then the config.
    blobs: Vec<Blob>,
    manifest: Bytes,
}

fn make_image(rng: &mut Rng, args: &PushArgs, client: usize, index: usize) -> Image {
    let mut blobs = Vec::with_capacity(args.layers + 1);
    let mut layer_descs = Vec::new();
    for _ in 0..args.layers {
        let size = rng.range(args.min_size, args.max_size);
        let data = rng.bytes(size);
        let digest = sha256(&data);
        layer_descs.push(serde_json::json!({
            "mediaType": LAYER_TYPE,
            "digest": digest,
            "size": data.len(),
        }));
        blobs.push(Blob {
            digest,
            data: data.into(),
        });
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"loadgen.client": client.to_string(), "loadgen.image": index.to_string()}},
        "rootfs": {
            "type": "layers",
            "diff_ids": blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(),
        },
    }))
    .expect("json");
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))
    .expect("json");
    blobs.push(Blob {
        digest: config_digest,
        data: config.into(),
    });
    Image {
        repo: format!("{}/c{client}", args.repo_prefix),
        tag: format!("i{index}"),
        blobs,
        manifest: manifest.into(),
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    requests: Arc<AtomicU64>,
}

impl Client {
    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    async fn push_blob(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        let base = &self.base;
        self.count();
        let head = self
            .http
            .head(format!("{base}/v2/{repo}/blobs/{}", blob.digest))
            .send()
            .await?;
        match head.status().as_u16() {
            404 => {}
            200 => return Ok(()), // already there (never, with unique content)
            s => bail!("HEAD blob: unexpected status {s}"),
        }
        self.count();
        let start = self
            .http
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await?;
        if start.status().as_u16() != 202 {
            bail!("POST upload: status {}", start.status());
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("POST upload: no Location")?;
        let mut url = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_string()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&blob.digest);
        self.count();
        let put = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        if put.status().as_u16() != 201 {
            let s = put.status();
            let text = put.text().await.unwrap_or_default();
            bail!("PUT upload: status {s}: {text}");
        }
        Ok(())
    }

    async fn push_image(&self, image: &Image) -> anyhow::Result<()> {
        for blob in &image.blobs {
            self.push_blob(&image.repo, blob)
                .await
                .with_context(|| format!("{}:{} blob {}", image.repo, image.tag, blob.digest))?;
        }
        self.count();
        let resp = self
            .http
            .put(format!(
                "{}/v2/{}/manifests/{}",
                self.base, image.repo, image.tag
            ))
            .header("content-type", MANIFEST_TYPE)
            .body(image.manifest.clone())
            .send()
            .await?;
        if resp.status().as_u16() != 201 {
            let s = resp.status();
            let text = resp.text().await.unwrap_or_default();
            bail!(
                "PUT manifest {}:{}: status {s}: {text}",
                image.repo,
                image.tag
            );
        }
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn push_images(args: PushArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.min_size > args.max_size {
        bail!("need --clients >= 1 and --min-size <= --max-size");
    }
    let base = args.registry.trim_end_matches('/').to_string();
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
    });

    // Split the images over the clients and generate everything up front.
    let total = if args.per_client {
        args.images * args.clients
    } else {
        args.images
    };
    let mut work: Vec<Vec<Image>> = (0..args.clients).map(|_| Vec::new()).collect();
    let mut bytes = 0u64;
    let mut blobs = 0u64;
    for (c, images) in work.iter_mut().enumerate() {
        let mut rng = Rng(seed ^ (c as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let n = if args.per_client {
            args.images
        } else {
            total / args.clients + usize::from(c < total % args.clients)
        };
        for i in 0..n {
            let img = make_image(&mut rng, &args, c, i);
            bytes += img.blobs.iter().map(|b| b.data.len() as u64).sum::<u64>();
            bytes += img.manifest.len() as u64;
            blobs += img.blobs.len() as u64;
            images.push(img);
        }
    }

    let requests = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for images in work {
        let client = Client {
            // One client, one connection, like a separate `docker push`.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(300))
                .build()?,
            base: base.clone(),
            requests: requests.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(images.len());
            for image in &images {
                let t = Instant::now();
                client.push_image(image).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            // Sanity check, after this client's clock stopped counting for it.
            anyhow::Ok((
                latencies,
                images.last().map(|i| (i.repo.clone(), i.tag.clone())),
            ))
        }));
    }
    let mut latencies = Vec::new();
    let mut lasts = Vec::new();
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok((l, last)) => {
                latencies.extend(l);
                lasts.extend(last);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(e.context("a client failed"));
    }

    // Every client's last image must be pullable by tag.
    let http = reqwest::Client::new();
    for (repo, tag) in &lasts {
        let r = http
            .get(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("accept", MANIFEST_TYPE)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("verification: GET {repo}:{tag} returned {}", r.status());
        }
    }

    latencies.sort_by(|a, b| a.total_cmp(b));
    let requests = requests.load(Ordering::Relaxed);
    let out = serde_json::json!({
        "clients": args.clients,
        "images": total,
        "layers": args.layers,
        "blobs": blobs,
        "bytes": bytes,
        "requests": requests,
        "seconds": seconds,
        "images_per_s": total as f64 / seconds,
        "requests_per_s": requests as f64 / seconds,
        "image_p50_ms": percentile(&latencies, 50.0),
        "image_p99_ms": percentile(&latencies, 99.0),
    });
    println!("{out}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::PushImages(args) => runtime.block_on(push_images(args)),
    }
}
