//! The analysis: dive 0.13.1's numbers (`image.Analyze`,
//! `filetree.Efficiency`) reproduced with their quirks, and berth's own
//! figures beside them.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use serde::Deserialize;

use crate::layer::{read_layer, LayerError, LayerTree};
use crate::tree::{FileTree, ROOT};

/// One `history` entry of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct History {
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    history: Vec<History>,
    #[serde(default)]
    rootfs: RootFs,
}

/// What goes wrong in an analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image config is not valid: {0}")]
    Config(String),
    #[error("{0}")]
    Archive(String),
    #[error("{0}")]
    NotFound(String),
    #[error("layer {index} ({id}): {reason}")]
    Layer {
        index: usize,
        id: String,
        reason: LayerError,
    },
}

/// A layer in the analysis (dive's `image.Layer`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub index: usize,
    /// dive's `id`: the first path component of the layer's file in a
    /// docker-archive; berth gives the blob digest for other sources.
    pub id: String,
    /// dive's `digestId`: the diff ID paired through the history.
    pub digest_id: String,
    /// Σ of the sizes of the layer's tar entries.
    pub size: u64,
    /// `created_by` without `/bin/sh -c `, or `(missing)`.
    pub command: String,
    /// Index into the config history (None: no history entry left).
    pub history_index: Option<usize>,
    pub data: LayerTree,
}

/// A path seen in two or more layers (dive's `EfficiencyData`).
#[derive(Debug, Clone, PartialEq)]
pub struct Inefficiency {
    pub path: String,
    pub count: usize,
    pub cumulative_size: i64,
}

/// A copy of a file that the final image does not show.
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaimable {
    pub path: String,
    pub size: u64,
    pub layer: usize,
    /// The layer that overwrote or deleted it.
    pub by_layer: usize,
    pub deleted: bool,
}

/// A file added again with the same content, only its metadata changed
/// (or nothing at all).
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataChange {
    pub path: String,
    pub size: u64,
    pub layer: usize,
    pub previous_layer: usize,
    /// `mode`, `uid`, `gid`; empty when the copy is identical.
    pub changed: Vec<&'static str>,
}

/// Paths of the final image with identical content.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateContent {
    pub size: u64,
    /// (path, layer that added it), by path.
    pub files: Vec<(String, usize)>,
}

/// berth's figures beside dive's.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub reclaimable_bytes: u64,
    pub reclaimable: Vec<Reclaimable>,
    pub duplicate_bytes: u64,
    pub duplicates: Vec<DuplicateContent>,
    pub metadata_only_bytes: u64,
    pub metadata_only: Vec<MetadataChange>,
}

/// The whole analysis.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub layers: Vec<Layer>,
    pub history: Vec<History>,
    pub size_bytes: u64,
    pub user_size_bytes: u64,
    pub wasted_bytes: u64,
    pub efficiency: f64,
    /// wasted / user bytes (NaN or inf when there are no user bytes, as
    /// in dive).
    pub wasted_user_percent: f64,
    /// In dive's `fileReference` order (largest first).
    pub inefficiencies: Vec<Inefficiency>,
    pub extras: Extras,
}

/// Paths the rules must not count (`--ignore`).
pub type Ignore<'a> = &'a (dyn Fn(&str) -> bool + Sync);

/// Builds an analysis layer by layer (each layer stream read once, in
/// order), so a caller can feed blobs as they arrive.
pub struct Analyzer {
    history: Vec<History>,
    diff_ids: Vec<String>,
    layers: Vec<(String, LayerTree)>,
}

impl Analyzer {
    pub fn new(config_json: &[u8]) -> Result<Analyzer, Error> {
        let raw: RawConfig =
            serde_json::from_slice(config_json).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Analyzer {
            history: raw.history,
            diff_ids: raw.rootfs.diff_ids,
            layers: Vec::new(),
        })
    }

    /// Reads the next layer's blob.
    pub fn add_layer(&mut self, id: String, blob: impl Read) -> Result<(), Error> {
        match read_layer(blob) {
            Ok(t) => {
                self.layers.push((id, t));
                Ok(())
            }
            Err(reason) => Err(Error::Layer {
                index: self.layers.len(),
                id,
                reason,
            }),
        }
    }

    /// Adds a layer already read ([`read_layer`]).
    pub fn push_layer(&mut self, id: String, tree: LayerTree) {
        self.layers.push((id, tree));
    }

    pub fn finish(self, ignore: Option<Ignore>) -> Analysis {
        let none = |_: &str| false;
        let ignore: Ignore = ignore.unwrap_or(&none);
        // Pair layers with history entries, skipping empty layers
        // (docker/image_archive.go ToImage; newConfig's IDs).
        let mut ids = Vec::with_capacity(self.history.len());
        let mut li = 0;
        for h in &self.history {
            if h.empty_layer {
                ids.push("<missing>".to_string());
            } else {
                ids.push(self.diff_ids.get(li).cloned().unwrap_or_default());
                li += 1;
            }
        }
        let mut hist_idx = 0;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (index, (id, data)) in self.layers.into_iter().enumerate() {
            if let Some(n) = (hist_idx..self.history.len()).find(|&i| !self.history[i].empty_layer)
            {
                hist_idx = n;
            }
            let (command, digest_id, history_index) =
                if hist_idx < self.history.len() && !self.history[hist_idx].empty_layer {
                    let h = &self.history[hist_idx];
                    let r = (
                        h.created_by
                            .strip_prefix("/bin/sh -c ")
                            .unwrap_or(&h.created_by)
                            .to_string(),
                        ids[hist_idx].clone(),
                        Some(hist_idx),
                    );
                    hist_idx += 1;
                    r
                } else {
                    ("(missing)".to_string(), String::new(), None)
                };
            layers.push(Layer {
                index,
                id,
                digest_id,
                size: data.tree.file_size,
                command,
                history_index,
                data,
            });
        }
        let trees: Vec<&FileTree> = layers.iter().map(|l| &l.data.tree).collect();
        let (efficiency, inefficiencies) = efficiency(&trees, ignore);
        let size_bytes: u64 = layers.iter().map(|l| l.size).sum();
        let user_size_bytes: u64 = layers.iter().skip(1).map(|l| l.size).sum();
        let wasted_bytes: u64 = inefficiencies
            .iter()
            .map(|i| i.cumulative_size as u64)
            .sum();
        let extras = extras(&layers, ignore);
        Analysis {
            layers,
            history: self.history,
            size_bytes,
            user_size_bytes,
            wasted_bytes,
            efficiency,
            wasted_user_percent: wasted_bytes as f64 / user_size_bytes as f64,
            inefficiencies,
            extras,
        }
    }
}

/// The analysis of an image from its config and its layer blobs in
/// order (id, stream).
pub fn analyze<R: Read>(
    config_json: &[u8],
    layers: impl IntoIterator<Item = (String, R)>,
    ignore: Option<Ignore>,
) -> Result<Analysis, Error> {
    let mut a = Analyzer::new(config_json)?;
    for (id, r) in layers {
        a.add_layer(id, r)?;
    }
    Ok(a.finish(ignore))
}

struct Entry {
    path: String,
    count: usize,
    cumulative: i64,
    min: i64,
}

/// `filetree.Efficiency`: every leaf of every layer, in name order; a
/// whiteout weighs what it deletes if that was a directory (Σ of the
/// sizes below it in the layers beneath), nothing if it was a file; a
/// whiteout of a path the layers beneath do not have ends that layer's
/// walk (dive returns the error from its visitor), after the path's
/// entry was made with a minimum of -1.
fn efficiency(trees: &[&FileTree], ignore: Ignore) -> (f64, Vec<Inefficiency>) {
    let mut map: HashMap<String, usize> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut matches: Vec<usize> = Vec::new();
    // The layers beneath the current one stacked (StackTreeRange(0,k-1):
    // a copy of layer 0 with layers 0..k stacked on it), built as needed.
    let mut stacked: Option<FileTree> = None;
    let mut stacked_through = 0;
    for (k, tree) in trees.iter().enumerate() {
        let _ = tree.visit_child_first(ROOT, &mut |id, node| -> Result<(), ()> {
            if !node.is_leaf() {
                return Ok(());
            }
            let path = tree.path(id);
            if ignore(&path) {
                return Ok(());
            }
            let idx = match map.get(&path) {
                Some(&i) => i,
                None => {
                    entries.push(Entry {
                        path: path.clone(),
                        count: 0,
                        cumulative: 0,
                        min: -1,
                    });
                    map.insert(path.clone(), entries.len() - 1);
                    entries.len() - 1
                }
            };
            let size = if node.is_whiteout() {
                let st = stacked.get_or_insert_with(|| trees[0].clone());
                while stacked_through < k {
                    st.stack(trees[stacked_through]);
                    stacked_through += 1;
                }
                let prev = st.get_node(&path).ok_or(())?;
                if st.node(prev).info.is_dir {
                    st.subtree_size(prev)
                } else {
                    0
                }
            } else {
                node.info.size
            };
            let e = &mut entries[idx];
            e.cumulative += size;
            if e.min < 0 || size < e.min {
                e.min = size;
            }
            e.count += 1;
            if e.count == 2 {
                matches.push(idx);
            }
            Ok(())
        });
    }
    let (mut min_sum, mut seen_sum) = (0i64, 0i64);
    for e in &entries {
        min_sum += e.min;
        seen_sum += e.cumulative;
    }
    let score = if seen_sum == 0 {
        1.0
    } else {
        min_sum as f64 / seen_sum as f64
    };
    crate::gosort::sort_by(&mut matches, |&a, &b| {
        entries[a].cumulative < entries[b].cumulative
    });
    let list = matches
        .iter()
        .rev()
        .map(|&i| Inefficiency {
            path: entries[i].path.clone(),
            count: entries[i].count,
            cumulative_size: entries[i].cumulative,
        })
        .collect();
    (score, list)
}

#[derive(Clone)]
struct Live {
    layer: usize,
    size: u64,
    hash: u64,
    type_flag: u8,
    mode: u32,
    uid: i64,
    gid: i64,
}

/// berth's figures, on the layers applied as a container runtime applies
/// them (whiteouts and opaque directories delete what the layers beneath
/// hold, then the layer's own entries are added).
fn extras(layers: &[Layer], ignore: Ignore) -> Extras {
    let mut live: BTreeMap<String, Live> = BTreeMap::new();
    let mut x = Extras::default();
    let remove_under =
        |live: &mut BTreeMap<String, Live>, prefix: &str, k: usize, x: &mut Extras| {
            let start = format!("{prefix}/");
            let keys: Vec<String> = live
                .range(start.clone()..)
                .take_while(|(p, _)| p.starts_with(&start))
                .map(|(p, _)| p.clone())
                .collect();
            for p in keys {
                if let Some(old) = live.remove(&p) {
                    x.reclaimable.push(Reclaimable {
                        path: p,
                        size: old.size,
                        layer: old.layer,
                        by_layer: k,
                        deleted: true,
                    });
                }
            }
        };
    for (k, layer) in layers.iter().enumerate() {
        let tree = &layer.data.tree;
        for d in &layer.data.opaque {
            remove_under(&mut live, d.trim_end_matches('/'), k, &mut x);
        }
        let mut adds = Vec::new();
        let _ = tree.visit_child_first(ROOT, &mut |id, node| -> Result<(), ()> {
            let path = tree.path(id);
            if node.is_whiteout() {
                if let Some(old) = live.remove(&path) {
                    x.reclaimable.push(Reclaimable {
                        path: path.clone(),
                        size: old.size,
                        layer: old.layer,
                        by_layer: k,
                        deleted: true,
                    });
                }
                remove_under(&mut live, &path, k, &mut x);
            } else if !node.info.path.is_empty() {
                adds.push((path, id));
            }
            Ok(())
        });
        for (path, id) in adds {
            let info = &tree.node(id).info;
            if info.is_dir {
                if let Some(old) = live.remove(&path) {
                    x.reclaimable.push(Reclaimable {
                        path,
                        size: old.size,
                        layer: old.layer,
                        by_layer: k,
                        deleted: true,
                    });
                }
                continue;
            }
            let new = Live {
                layer: k,
                size: info.size.max(0) as u64,
                hash: info.hash,
                type_flag: info.type_flag,
                mode: info.file_mode,
                uid: info.uid,
                gid: info.gid,
            };
            if let Some(old) = live.insert(path.clone(), new.clone()) {
                if old.type_flag == new.type_flag
                    && old.hash == new.hash
                    && old.size == new.size
                    && new.size > 0
                {
                    let mut changed = Vec::new();
                    if old.mode != new.mode {
                        changed.push("mode");
                    }
                    if old.uid != new.uid {
                        changed.push("uid");
                    }
                    if old.gid != new.gid {
                        changed.push("gid");
                    }
                    x.metadata_only.push(MetadataChange {
                        path: path.clone(),
                        size: new.size,
                        layer: k,
                        previous_layer: old.layer,
                        changed,
                    });
                }
                x.reclaimable.push(Reclaimable {
                    path,
                    size: old.size,
                    layer: old.layer,
                    by_layer: k,
                    deleted: false,
                });
            }
        }
    }
    x.reclaimable.retain(|r| !ignore(&r.path));
    x.metadata_only.retain(|m| !ignore(&m.path));
    x.reclaimable_bytes = x.reclaimable.iter().map(|r| r.size).sum();
    x.metadata_only_bytes = x.metadata_only.iter().map(|m| m.size).sum();
    x.reclaimable
        .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    x.metadata_only
        .sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let mut groups: HashMap<(u64, u64), Vec<(String, usize)>> = HashMap::new();
    for (p, l) in &live {
        if l.type_flag == b'0' && l.size > 0 && !ignore(p) {
            groups
                .entry((l.hash, l.size))
                .or_default()
                .push((p.clone(), l.layer));
        }
    }
    let mut dups: Vec<DuplicateContent> = groups
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((_, size), files)| DuplicateContent { size, files })
        .collect();
    dups.sort_by(|a, b| {
        (b.size * (b.files.len() as u64 - 1))
            .cmp(&(a.size * (a.files.len() as u64 - 1)))
            .then_with(|| a.files.cmp(&b.files))
    });
    x.duplicate_bytes = dups
        .iter()
        .map(|d| d.size * (d.files.len() as u64 - 1))
        .sum();
    x.duplicates = dups;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, u8, usize, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for &(name, kind, size, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::new(kind));
            h.set_mode(mode);
            h.set_size(size as u64);
            match kind {
                b'2' | b'1' => b.append_link(&mut h, name, "etc/a").unwrap(),
                _ => b.append_data(&mut h, name, &vec![b'x'; size][..]).unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    /// The image of dive's own output recorded while porting (dive 0.13.1
    /// printed efficiency 0.4045238095238095 and 3500 wasted bytes): a
    /// whiteout of a directory weighs its files, of a file nothing, and a
    /// whiteout of a missing path stops that layer's count.
    #[test]
    fn dive_quirks() {
        let layers = [
            tar(&[
                ("etc", b'5', 0, 0o755),
                ("etc/a", b'0', 1000, 0o644),
                ("etc/b", b'0', 500, 0o644),
                ("d", b'5', 0, 0o755),
                ("d/f1", b'0', 300, 0o644),
                ("d/sub/g", b'0', 50, 0o644),
            ]),
            tar(&[
                ("etc/a", b'0', 2000, 0o644),
                ("etc/.wh.b", b'0', 0, 0o644),
                ("l", b'2', 0, 0o644),
                ("h", b'1', 0, 0o644),
            ]),
            tar(&[
                (".wh.d", b'0', 0, 0o644),
                ("etc/a", b'0', 2000, 0o755),
                ("x/.wh..wh..opq", b'0', 0, 0o644),
                (".wh.nothere", b'0', 0, 0o644),
                ("zz", b'0', 10, 0o644),
            ]),
        ];
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:a","sha256:b","sha256:c"]},
            "history":[{"created_by":"/bin/sh -c #(nop) ADD file:abc in /"},{"created_by":"ENV A=1","empty_layer":true},
            {"created_by":"/bin/sh -c echo hi"},{"created_by":"RUN x"}]}"#;
        let a = analyze(
            config,
            layers
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("l{i}"), &t[..])),
            None,
        )
        .unwrap();
        assert_eq!(a.efficiency, 0.4045238095238095);
        assert_eq!(a.wasted_bytes, 3500);
        assert_eq!(a.size_bytes, 5860);
        let sizes: Vec<u64> = a.layers.iter().map(|l| l.size).collect();
        assert_eq!(sizes, [1850, 2000, 2010]);
        let cmds: Vec<&str> = a.layers.iter().map(|l| l.command.as_str()).collect();
        assert_eq!(cmds, ["#(nop) ADD file:abc in /", "echo hi", "RUN x"]);
        assert_eq!(a.layers[1].digest_id, "sha256:b");
        let refs: Vec<(&str, usize, i64)> = a
            .inefficiencies
            .iter()
            .map(|i| (i.path.as_str(), i.count, i.cumulative_size))
            .collect();
        assert_eq!(refs, [("/etc/a", 2, 3000), ("/etc/b", 2, 500)]);
        assert_eq!((a.wasted_user_percent * 1e6).round() / 1e6, 0.872818);
    }
}
