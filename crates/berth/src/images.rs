//! `berth images`: what the local store holds, like `docker images`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_oci::{ManifestKind, ParsedManifest, Reference};
use berth_root::LocalRoot;

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Only repositories whose name starts with this
    repository: Option<String>,
    /// Print only the image digests
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table or json
    #[arg(long, default_value = "table")]
    format: String,
}

struct Row {
    repository: String,
    tag: String,
    digest: String,
    media_type: String,
    size: u64,
}

/// Bytes an image takes: its manifest, config and layers; for an index, its
/// own bytes plus those of the children present in the repository.
async fn image_size(store: &LocalRoot, repo: &str, bytes: &[u8], media_type: &str) -> u64 {
    let Ok(m) = ParsedManifest::parse(bytes, Some(media_type)) else {
        return bytes.len() as u64;
    };
    let own = bytes.len() as u64;
    match m.kind {
        ManifestKind::Image => own + m.required_blobs().map(|d| d.size).sum::<u64>(),
        ManifestKind::Index => {
            let mut total = own;
            for c in &m.manifests {
                let r = Reference::Digest(c.digest.clone());
                if let Ok(Some(child)) = store.manifest(repo, &r).await {
                    total +=
                        Box::pin(image_size(store, repo, &child.bytes, &child.media_type)).await;
                }
            }
            total
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replacen(".000", "", 1)
    }
}

pub fn images(root: Option<PathBuf>, args: ImagesArgs) -> Result<()> {
    if args.format != "table" && args.format != "json" {
        anyhow::bail!("unknown --format {:?}: use table or json", args.format);
    }
    let root = root.unwrap_or_else(berth_store::default_root);
    // Through `berth serve`'s local endpoint if a server holds the root.
    let store = LocalRoot::open(&root)
        .with_context(|| format!("cannot open the berth root {}", root.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = rt.block_on(rows(&store, args.repository.as_deref()))?;
    print_rows(&rows, &args)
}

async fn rows(store: &LocalRoot, prefix: Option<&str>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for repo in store.catalog().await? {
        if prefix.is_some_and(|p| !repo.starts_with(p)) {
            continue;
        }
        let Some(tags) = store.tags(&repo).await? else {
            continue;
        };
        for tag in tags {
            let Some(m) = store.manifest(&repo, &Reference::Tag(tag.clone())).await? else {
                continue;
            };
            rows.push(Row {
                size: image_size(store, &repo, &m.bytes, &m.media_type).await,
                repository: repo.clone(),
                tag,
                digest: m.digest.to_string(),
                media_type: m.media_type,
            });
        }
    }
    Ok(rows)
}

fn print_rows(rows: &[Row], args: &ImagesArgs) -> Result<()> {
    if args.quiet {
        for r in rows {
            println!("{}", r.digest);
        }
    } else if args.format == "json" {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "Repository": r.repository, "Tag": r.tag, "Digest": r.digest,
                    "MediaType": r.media_type, "Size": r.size,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let w = rows
            .iter()
            .map(|r| r.repository.len())
            .max()
            .unwrap_or(0)
            .max(10);
        let t = rows.iter().map(|r| r.tag.len()).max().unwrap_or(0).max(3);
        println!(
            "{:<w$}   {:<t$}   {:<19}   SIZE",
            "REPOSITORY", "TAG", "DIGEST"
        );
        for r in rows {
            let short = r.digest.get(..19).unwrap_or(&r.digest);
            println!(
                "{:<w$}   {:<t$}   {short}   {}",
                r.repository,
                r.tag,
                human(r.size)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(999), "999B");
        assert_eq!(super::human(1000), "1kB");
        assert_eq!(super::human(5_242_880), "5.243MB");
    }
}
