//! `berth images`: what the local store holds, like `docker images`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_oci::{ManifestKind, ParsedManifest, Reference};
use berth_store::{Access, Store};

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
fn image_size(store: &Store, repo: &str, bytes: &[u8], media_type: &str) -> u64 {
    let Ok(m) = ParsedManifest::parse(bytes, Some(media_type)) else {
        return bytes.len() as u64;
    };
    let own = bytes.len() as u64;
    match m.kind {
        ManifestKind::Image => own + m.required_blobs().map(|d| d.size).sum::<u64>(),
        ManifestKind::Index => {
            own + m
                .manifests
                .iter()
                .filter_map(|c| {
                    let child = store
                        .manifest(repo, &Reference::Digest(c.digest.clone()))
                        .ok()??;
                    Some(image_size(store, repo, &child.bytes, &child.media_type))
                })
                .sum::<u64>()
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
    let store = Store::open(&root, Access::Shared)
        .with_context(|| format!("cannot open the berth root {}", root.display()))?;
    let mut rows = Vec::new();
    for repo in store.catalog(None, None)?.items {
        if args
            .repository
            .as_deref()
            .is_some_and(|p| !repo.starts_with(p))
        {
            continue;
        }
        let Some(tags) = store.tags(&repo, None, None)? else {
            continue;
        };
        for tag in tags.items {
            let Some(m) = store.manifest(&repo, &Reference::Tag(tag.clone()))? else {
                continue;
            };
            rows.push(Row {
                size: image_size(&store, &repo, &m.bytes, &m.media_type),
                repository: repo.clone(),
                tag,
                digest: m.digest.to_string(),
                media_type: m.media_type,
            });
        }
    }
    if args.quiet {
        for r in &rows {
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
        for r in &rows {
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
