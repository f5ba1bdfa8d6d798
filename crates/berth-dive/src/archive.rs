//! A docker-archive (`docker save`) analysed in one pass over the tar,
//! as dive reads it (`docker/image_archive.go`): layer files (`*.tar`,
//! `*.tar.gz`, and under `blobs/` whatever is not JSON) become trees as
//! they stream by, JSON files are kept, and `manifest.json` orders them
//! at the end. A layer file that is a symbolic link is an empty layer, as
//! dive reads it. Nothing is written to disk.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use crate::analysis::{Analysis, Analyzer, Error, Ignore};
use crate::layer::{read_layer, sniff, Compression, LayerError, LayerTree};

/// Largest JSON file (manifest, config) read from an archive.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Most layer files an archive may hold.
pub const MAX_LAYER_FILES: usize = 4096;

fn archive_error(msg: impl Into<String>) -> Error {
    Error::Archive(msg.into())
}

/// Analyses the first image of a docker-archive read from `r` (plain or
/// gzip-compressed tar), or the one whose `RepoTags` has `name`.
pub fn analyze_docker_archive(
    r: impl Read,
    name: Option<&str>,
    ignore: Option<Ignore>,
) -> Result<Analysis, Error> {
    let mut r = BufReader::with_capacity(256 << 10, r);
    let head = r.fill_buf().map_err(|e| archive_error(e.to_string()))?;
    let inner: Box<dyn Read> = match sniff(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        _ => Box::new(r),
    };
    let mut archive = tar::Archive::new(inner);
    let mut json: HashMap<String, Vec<u8>> = HashMap::new();
    let mut layers: HashMap<String, LayerTree> = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| archive_error(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut e = entry.map_err(|e| archive_error(format!("not a readable tar archive: {e}")))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = e.header().entry_type();
        if !(kind.is_symlink() || kind.is_file()) {
            continue;
        }
        let is_layer_name =
            name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with("tgz");
        if is_layer_name {
            if layers.len() >= MAX_LAYER_FILES {
                return Err(archive_error(format!(
                    "more than {MAX_LAYER_FILES} layer files; refusing it"
                )));
            }
            let tree = if kind.is_symlink() {
                LayerTree::default()
            } else {
                read_layer(&mut e).map_err(|reason| Error::Layer {
                    index: layers.len(),
                    id: name.clone(),
                    reason,
                })?
            };
            layers.insert(name, tree);
        } else if name.ends_with(".json") || name.starts_with("sha256:") {
            json.insert(name, read_json(&mut e)?);
        } else if name.starts_with("blobs/") && kind.is_file() {
            let mut b = BufReader::new(&mut e);
            let first = b
                .fill_buf()
                .map_err(|e| archive_error(e.to_string()))?
                .iter()
                .find(|c| !c.is_ascii_whitespace())
                .copied();
            if matches!(first, Some(b'{' | b'[')) {
                json.insert(name, read_json(&mut b)?);
            } else {
                if layers.len() >= MAX_LAYER_FILES {
                    return Err(archive_error(format!(
                        "more than {MAX_LAYER_FILES} layer files; refusing it"
                    )));
                }
                // What is neither JSON nor a layer is skipped, as dive
                // skips it; a manifest naming it reports it below.
                match read_layer(&mut b) {
                    Ok(t) => {
                        layers.insert(name, t);
                    }
                    Err(reason) => {
                        layers_failed(&mut json, name, reason);
                    }
                }
            }
        }
    }
    let manifest = json
        .get("manifest.json")
        .ok_or_else(|| archive_error("could not find image manifest (manifest.json)"))?;
    let manifest: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| archive_error(format!("manifest.json: {e}")))?;
    let images = manifest
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| archive_error("manifest.json lists no image"))?;
    let image = match name {
        None => &images[0],
        Some(n) => images
            .iter()
            .find(|i| {
                i["RepoTags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(n)))
            })
            .ok_or_else(|| Error::NotFound(format!("the archive has no image named {n}")))?,
    };
    let config_path = image["Config"].as_str().unwrap_or_default();
    let config = json
        .get(config_path)
        .ok_or_else(|| archive_error(format!("could not find image config {config_path:?}")))?;
    let mut a = Analyzer::new(config)?;
    let paths: Vec<&str> = image["Layers"]
        .as_array()
        .map(|v| v.iter().map(|p| p.as_str().unwrap_or_default()).collect())
        .unwrap_or_default();
    for (i, p) in paths.iter().enumerate() {
        let last_use = !paths[i + 1..].contains(p);
        let tree = if last_use {
            layers.remove(*p)
        } else {
            layers.get(*p).cloned()
        };
        let tree = match tree {
            Some(t) => t,
            None => {
                let why = json
                    .get(&format!("\0failed:{p}"))
                    .map(|m| format!(": {}", String::from_utf8_lossy(m)))
                    .unwrap_or_default();
                return Err(archive_error(format!(
                    "layer {i} ({p}) is not a layer in the archive{why}"
                )));
            }
        };
        a.push_layer(p.split('/').next().unwrap_or_default().to_string(), tree);
    }
    Ok(a.finish(ignore))
}

/// Remembers why a `blobs/` file was not a layer, for the message if the
/// manifest names it.
fn layers_failed(json: &mut HashMap<String, Vec<u8>>, name: String, reason: LayerError) {
    json.insert(format!("\0failed:{name}"), reason.to_string().into_bytes());
}

fn read_json(r: &mut impl Read) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    r.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| archive_error(e.to_string()))?;
    if buf.len() as u64 > MAX_JSON_BYTES {
        return Err(archive_error(format!(
            "a JSON file larger than {MAX_JSON_BYTES} bytes; refusing it"
        )));
    }
    Ok(buf)
}
