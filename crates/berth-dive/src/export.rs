//! dive's `--json` document (`runtime/export`), plus a `berth` object.

use serde::Serialize;

use crate::analysis::Analysis;
use crate::tree::{FileInfo, ROOT};

#[derive(Serialize)]
struct Export<'a> {
    layer: Vec<ExportLayer<'a>>,
    image: ExportImage,
    #[serde(skip_serializing_if = "Option::is_none")]
    berth: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportLayer<'a> {
    index: usize,
    id: &'a str,
    digest_id: &'a str,
    size_bytes: u64,
    command: &'a str,
    file_list: Vec<&'a FileInfo>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportImage {
    size_bytes: u64,
    inefficient_bytes: u64,
    efficiency_score: f64,
    file_reference: Vec<FileReference>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileReference {
    count: usize,
    size_bytes: u64,
    file: String,
}

/// The document: dive's schema, and with `with_berth` the `berth` object.
pub fn to_json(a: &Analysis, with_berth: bool) -> serde_json::Value {
    serde_json::to_value(document(a, with_berth)).expect("serialisable")
}

/// [`to_json`] written (indented, as dive writes it) straight to `w`,
/// without building the document in memory first.
pub fn write_json(
    a: &Analysis,
    with_berth: bool,
    w: impl std::io::Write,
) -> serde_json::Result<()> {
    serde_json::to_writer_pretty(w, &document(a, with_berth))
}

fn document(a: &Analysis, with_berth: bool) -> Export<'_> {
    let layer = a
        .layers
        .iter()
        .map(|l| {
            let mut files = Vec::new();
            let t = &l.data.tree;
            let _ = t.visit_child_first(ROOT, &mut |_, n| -> Result<(), ()> {
                files.push(&n.info);
                Ok(())
            });
            ExportLayer {
                index: l.index,
                id: &l.id,
                digest_id: &l.digest_id,
                size_bytes: l.size,
                command: &l.command,
                file_list: files,
            }
        })
        .collect();
    let e = Export {
        layer,
        image: ExportImage {
            size_bytes: a.size_bytes,
            inefficient_bytes: a.wasted_bytes,
            efficiency_score: a.efficiency,
            file_reference: a
                .inefficiencies
                .iter()
                .map(|i| FileReference {
                    count: i.count,
                    size_bytes: i.cumulative_size as u64,
                    file: i.path.clone(),
                })
                .collect(),
        },
        berth: with_berth.then(|| berth_object(a)),
    };
    e
}

fn layer_ref(a: &Analysis, i: usize) -> serde_json::Value {
    serde_json::json!({
        "index": i,
        "command": a.layers.get(i).map(|l| l.command.as_str()).unwrap_or(""),
    })
}

/// berth's figures: reclaimable bytes, duplicate content, metadata-only
/// changes, each with the layers and commands that caused them.
pub fn berth_object(a: &Analysis) -> serde_json::Value {
    let x = &a.extras;
    serde_json::json!({
        "userWastedPercent": if a.wasted_user_percent.is_finite() { serde_json::json!(a.wasted_user_percent) } else { serde_json::Value::Null },
        "userSizeBytes": a.user_size_bytes,
        "reclaimableBytes": x.reclaimable_bytes,
        "reclaimable": x.reclaimable.iter().map(|r| serde_json::json!({
            "file": r.path,
            "sizeBytes": r.size,
            "layer": layer_ref(a, r.layer),
            "how": if r.deleted { "deleted" } else { "overwritten" },
            "by": layer_ref(a, r.by_layer),
        })).collect::<Vec<_>>(),
        "duplicateContentBytes": x.duplicate_bytes,
        "duplicateContent": x.duplicates.iter().map(|d| serde_json::json!({
            "sizeBytes": d.size,
            "wastedBytes": d.size * (d.files.len() as u64 - 1),
            "files": d.files.iter().map(|(p, l)| serde_json::json!({"file": p, "layer": layer_ref(a, *l)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "metadataOnlyBytes": x.metadata_only_bytes,
        "metadataOnly": x.metadata_only.iter().map(|m| serde_json::json!({
            "file": m.path,
            "sizeBytes": m.size,
            "layer": layer_ref(a, m.layer),
            "previous": layer_ref(a, m.previous_layer),
            "changed": m.changed,
        })).collect::<Vec<_>>(),
    })
}
