//! `berth tag`, `berth rmi` and `berth import`: the local store the way the
//! Docker CLI handles its images. Names follow Docker's normalisation
//! (`alpine` = `docker.io/library/alpine:latest`); the local store keys an
//! image by repository path and tag, as `berth pull` stores it.
//!
//! Everything goes through `berth_root::LocalRoot`, so the commands work
//! beside a running `berth serve` on the same root.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use berth_oci::{
    media_type, ContainerConfig, Digest, History, ImageConfig, ImageRef, ManifestKind,
    ParsedManifest, Reference, RootFs,
};
use berth_root::LocalRoot;
use bytes::Bytes;

use crate::inspect::Platform;

#[derive(clap::Args)]
pub struct TagArgs {
    /// The image to tag: NAME[:TAG] or NAME@DIGEST in the local store
    source: String,
    /// The new name: NAME[:TAG] (another repository is fine)
    target: String,
}

#[derive(clap::Args)]
pub struct RmiArgs {
    /// Remove the image from every repository and tag that names it
    #[arg(short, long)]
    force: bool,
    /// Images: NAME[:TAG], NAME@DIGEST, or a manifest digest (or a unique prefix of one, as `berth images` shows it)
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// History comment (default "Imported from SOURCE")
    #[arg(short, long)]
    message: Option<String>,
    /// Platform of the image, os/arch[/variant] [default: this machine's]
    #[arg(long)]
    platform: Option<String>,
    /// Rootfs tarball (plain, gzip or zstd is refused: plain or gzip), an http(s) URL, or - for standard input
    source: String,
    /// Name to store it under: NAME[:TAG]. Without one the image is stored by digest only, in repository `imported`
    reference: Option<String>,
}

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Where an untagged import goes: the store keys manifests by repository.
const UNNAMED_REPO: &str = "imported";

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn open(root: Option<PathBuf>) -> Result<LocalRoot> {
    let root = root.unwrap_or_else(berth_store::default_root);
    LocalRoot::open(&root).with_context(|| format!("cannot open the berth root {}", root.display()))
}

/// A local image name: repository path plus tag or digest.
#[derive(Debug, Clone)]
struct Local {
    repo: String,
    reference: Reference,
}

impl Local {
    fn parse(s: &str) -> Result<Local> {
        let r = ImageRef::parse(s).with_context(|| format!("{s:?} is not an image name"))?;
        let reference = match (&r.digest, &r.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            (None, None) => Reference::Tag("latest".into()),
        };
        Ok(Local {
            repo: r.repository,
            reference,
        })
    }

    fn tag(&self) -> Option<&str> {
        match &self.reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

/// How Docker prints a name: `alpine:latest`, `user/app@sha256:...`.
fn familiar(repo: &str, reference: &Reference) -> String {
    let mut r = ImageRef {
        registry: "docker.io".into(),
        repository: repo.to_string(),
        tag: None,
        digest: None,
    };
    match reference {
        Reference::Tag(t) => r.tag = Some(t.clone()),
        Reference::Digest(d) => r.digest = Some(d.clone()),
    }
    r.familiar()
}

// ---- tag -------------------------------------------------------------------

pub fn tag(root: Option<PathBuf>, args: TagArgs) -> Result<()> {
    let src = Local::parse(&args.source)?;
    let dst = Local::parse(&args.target)?;
    let Some(tag) = dst.tag().map(str::to_string) else {
        bail!("{}: a tag cannot be a digest; use NAME[:TAG]", args.target);
    };
    let local = open(root)?;
    runtime()?.block_on(async {
        let m = local
            .manifest(&src.repo, &src.reference)
            .await?
            .ok_or_else(|| anyhow!("No such image: {}", args.source))?;
        if dst.repo != src.repo {
            copy_into(&local, &src.repo, &dst.repo, &m.bytes, &m.media_type).await?;
        }
        local
            .put_manifest(&dst.repo, Some(&tag), Bytes::from(m.bytes), &m.media_type)
            .await
            .with_context(|| format!("tagging {}", args.target))?;
        anyhow::Ok(())
    })
}

/// Makes a manifest of `from` storable in `to`: links its blobs there and
/// stores an index's children (by digest) first. Blobs are shared files, so
/// nothing is copied.
async fn copy_into(
    local: &LocalRoot,
    from: &str,
    to: &str,
    bytes: &[u8],
    media_type: &str,
) -> Result<()> {
    let parsed = ParsedManifest::parse(bytes, Some(media_type))
        .map_err(|e| anyhow!("the stored manifest is invalid: {e}"))?;
    for d in parsed.required_blobs() {
        local
            .link_blob(to, &d.digest)
            .await
            .with_context(|| format!("linking {} into {to}", d.digest))?;
    }
    if parsed.kind == ManifestKind::Index {
        for child in &parsed.manifests {
            let r = Reference::Digest(child.digest.clone());
            let Some(c) = local.manifest(from, &r).await? else {
                bail!(
                    "{from}: index child {} is missing from the store",
                    child.digest
                );
            };
            Box::pin(copy_into(local, from, to, &c.bytes, &c.media_type)).await?;
            local
                .put_manifest(to, None, Bytes::from(c.bytes), &c.media_type)
                .await?;
        }
    }
    Ok(())
}

// ---- rmi -------------------------------------------------------------------

/// Every tag of the store: (repository, tag, digest).
async fn all_tags(local: &LocalRoot) -> Result<Vec<(String, String, Digest)>> {
    let mut out = Vec::new();
    for repo in local.catalog().await? {
        for tag in local.tags(&repo).await?.unwrap_or_default() {
            if let Some(d) = local.resolve(&repo, &Reference::Tag(tag.clone())).await? {
                out.push((repo.clone(), tag, d));
            }
        }
    }
    Ok(out)
}

/// `sha256:<hex>`, `sha256:<prefix>` or a bare hex prefix (at least 4).
fn digest_prefix(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let ok = hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (ok && hex.bytes().all(|b| !b.is_ascii_uppercase())).then(|| format!("sha256:{hex}"))
}

pub fn rmi(root: Option<PathBuf>, args: RmiArgs) -> Result<()> {
    let local = open(root)?;
    let rt = runtime()?;
    let mut failed = 0;
    for image in &args.images {
        if let Err(e) = rt.block_on(remove(&local, image, args.force)) {
            eprintln!("Error: {e:#}");
            failed += 1;
        }
    }
    match failed {
        0 => Ok(()),
        n => bail!("{n} of {} images could not be removed", args.images.len()),
    }
}

async fn remove(local: &LocalRoot, image: &str, force: bool) -> Result<()> {
    // A name first, as Docker does; then a digest (prefix).
    let named = Local::parse(image).ok();
    if let Some(n) = &named {
        if let Some(d) = local.resolve(&n.repo, &n.reference).await? {
            return match &n.reference {
                Reference::Tag(t) if !force => untag(local, &n.repo, t, &d).await,
                Reference::Tag(_) => delete_everywhere(local, &d, true).await,
                Reference::Digest(_) => {
                    delete_in(local, &n.repo, &d).await?;
                    report_deleted(local, &d).await
                }
            };
        }
    }
    if let Some(prefix) = digest_prefix(image) {
        let tags = all_tags(local).await?;
        let found: BTreeSet<&Digest> = tags
            .iter()
            .map(|(_, _, d)| d)
            .filter(|d| d.to_string().starts_with(&prefix))
            .collect();
        match found.len() {
            1 => {
                let d = (*found.iter().next().expect("one")).clone();
                return delete_everywhere(local, &d, force).await;
            }
            0 => {
                // An untagged manifest can only be named in full.
                if let Ok(d) = prefix.parse::<Digest>() {
                    let mut any = false;
                    for repo in local.catalog().await? {
                        any |= delete_in(local, &repo, &d).await?;
                    }
                    if any {
                        return report_deleted(local, &d).await;
                    }
                }
            }
            n => bail!("{image}: the prefix matches {n} images; give more of the digest"),
        }
    }
    bail!("No such image: {image}")
}

/// Removes one tag; the manifest goes too when it was the repository's last
/// tag for it.
async fn untag(local: &LocalRoot, repo: &str, tag: &str, digest: &Digest) -> Result<()> {
    local.delete_tag(repo, tag).await?;
    println!("Untagged: {}", familiar(repo, &Reference::Tag(tag.into())));
    let still = all_tags(local).await?;
    if still.iter().any(|(r, _, d)| r == repo && d == digest) {
        return Ok(());
    }
    delete_in(local, repo, digest).await?;
    report_deleted(local, digest).await
}

/// Removes `digest` from every repository that tags it. Without `force`,
/// an image named by several repositories is refused, as Docker does.
async fn delete_everywhere(local: &LocalRoot, digest: &Digest, force: bool) -> Result<()> {
    let tags = all_tags(local).await?;
    let holders: Vec<&(String, String, Digest)> =
        tags.iter().filter(|(_, _, d)| d == digest).collect();
    let repos: BTreeSet<&str> = holders.iter().map(|(r, _, _)| r.as_str()).collect();
    if repos.len() > 1 && !force {
        bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories ({})",
            short(digest),
            repos.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    for (repo, tag, _) in &holders {
        local.delete_tag(repo, tag).await?;
        println!("Untagged: {}", familiar(repo, &Reference::Tag(tag.clone())));
    }
    for repo in repos {
        delete_in(local, repo, digest).await?;
    }
    report_deleted(local, digest).await
}

/// Deletes a manifest from `repo`, and for an index the children no
/// remaining tag of `repo` reaches. `false` if `repo` did not have it.
async fn delete_in(local: &LocalRoot, repo: &str, digest: &Digest) -> Result<bool> {
    let Some(m) = local
        .manifest(repo, &Reference::Digest(digest.clone()))
        .await?
    else {
        return Ok(false);
    };
    local.delete_manifest(repo, digest).await?;
    let Ok(parsed) = ParsedManifest::parse(&m.bytes, Some(&m.media_type)) else {
        return Ok(true);
    };
    if parsed.kind == ManifestKind::Index {
        let mut reached = BTreeSet::new();
        for tag in local.tags(repo).await?.unwrap_or_default() {
            if let Some(t) = local.manifest(repo, &Reference::Tag(tag)).await? {
                reached.insert(t.digest.clone());
                if let Ok(p) = ParsedManifest::parse(&t.bytes, Some(&t.media_type)) {
                    reached.extend(p.manifests.iter().map(|c| c.digest.clone()));
                }
            }
        }
        for child in parsed.manifests {
            if reached.contains(&child.digest) {
                continue;
            }
            match local.delete_manifest(repo, &child.digest).await {
                Ok(true) => println!("Deleted: {}", child.digest),
                Ok(false) => {}
                // Another index of the repository (untagged) still names it.
                Err(e) if e.is_manifest_referenced() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(true)
}

/// Prints `Deleted:` unless another repository still names the image.
async fn report_deleted(local: &LocalRoot, digest: &Digest) -> Result<()> {
    if !all_tags(local).await?.iter().any(|(_, _, d)| d == digest) {
        println!("Deleted: {digest}");
    }
    Ok(())
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

// ---- import ----------------------------------------------------------------

/// Applies `--change` instructions to a config, the subset `docker import`
/// accepts.
fn apply_changes(config: &mut ContainerConfig, changes: &[String]) -> Result<()> {
    for change in changes {
        let change = change.trim();
        let (instr, rest) = change
            .split_once(|c: char| c.is_whitespace())
            .map(|(i, r)| (i, r.trim()))
            .unwrap_or((change, ""));
        let what = || format!("--change {change:?}");
        if rest.is_empty() {
            bail!("{}: {} needs an argument", what(), instr.to_uppercase());
        }
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => config.cmd = Some(command_form(rest).with_context(what)?),
            "ENTRYPOINT" => config.entrypoint = Some(command_form(rest).with_context(what)?),
            "ENV" => {
                let env = config.env.get_or_insert_with(Vec::new);
                for (k, v) in key_values(rest, true).with_context(what)? {
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |p| p.0) != k);
                    env.push(format!("{k}={v}"));
                }
            }
            "LABEL" => {
                let labels = config.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in key_values(rest, false).with_context(what)? {
                    labels.insert(k, v);
                }
            }
            "EXPOSE" => {
                let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in words(rest).with_context(what)? {
                    let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if port.parse::<u16>().is_err() || !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
                        bail!("{}: {p:?} is not PORT[/tcp|udp|sctp]", what());
                    }
                    ports.insert(format!("{port}/{proto}"), serde_json::json!({}));
                }
            }
            "USER" => config.user = Some(rest.to_string()),
            "WORKDIR" => {
                let dir = match &config.working_dir {
                    Some(base) if !rest.starts_with('/') => {
                        format!("{}/{rest}", base.trim_end_matches('/'))
                    }
                    _ => rest.to_string(),
                };
                config.working_dir = Some(dir);
            }
            "VOLUME" => {
                let vols = config.volumes.get_or_insert_with(BTreeMap::new);
                let list = match json_array(rest) {
                    Some(a) => a.with_context(what)?,
                    None => words(rest).with_context(what)?,
                };
                for v in list {
                    vols.insert(v, serde_json::json!({}));
                }
            }
            "ONBUILD" => config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(rest.to_string()),
            other => bail!(
                "{}: {other} cannot be applied by import (supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR)",
                what()
            ),
        }
    }
    Ok(())
}

/// `["a", "b"]` if `s` is written as a JSON array (`None` if it is not).
fn json_array(s: &str) -> Option<Result<Vec<String>>> {
    if !s.starts_with('[') {
        return None;
    }
    Some(
        serde_json::from_str::<Vec<String>>(s)
            .map_err(|e| anyhow!("{s} is not a JSON array of strings: {e}")),
    )
}

/// Exec form (JSON array) or shell form (`/bin/sh -c ...`), as Dockerfiles.
fn command_form(s: &str) -> Result<Vec<String>> {
    match json_array(s) {
        Some(a) => a,
        None => Ok(vec!["/bin/sh".into(), "-c".into(), s.to_string()]),
    }
}

/// Splits on whitespace, honouring double and single quotes and backslash
/// escapes (outside single quotes).
fn words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                cur.push(
                    chars
                        .next()
                        .ok_or_else(|| anyhow!("{s:?} ends with a backslash"))?,
                );
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("{s:?} has an unterminated quote");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `K=V K2="v 2"`; for ENV also the legacy `K V with spaces`.
fn key_values(s: &str, legacy: bool) -> Result<Vec<(String, String)>> {
    let first = s.split_whitespace().next().unwrap_or_default();
    if legacy && !first.contains('=') {
        let value = s[first.len()..].trim();
        return Ok(vec![(first.to_string(), value.to_string())]);
    }
    words(s)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow!("{w:?} is not KEY=VALUE")),
        })
        .collect()
}

/// RFC 3339 (UTC, seconds) for a Unix time.
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `SOURCE_DATE_EPOCH` if set (reproducible imports), else now.
fn created_time() -> Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<i64>().map_err(|_| {
            anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?,
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    Ok(rfc3339(secs))
}

/// Counts and hashes what passes through.
struct Tee<R> {
    inner: R,
    hasher: berth_oci::Hasher,
    sink: flate2::write::GzEncoder<WriterSink>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A `BlobWriter` as an `io::Write` for the gzip encoder.
struct WriterSink(berth_store::BlobWriter);

impl Write for WriterSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What importing a rootfs tarball produced.
struct Layer {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

/// Reads a rootfs tarball (plain or gzip), checks it is a well-formed tar
/// to the end, and stores it gzip-compressed; the diff ID is the sha256 of
/// the uncompressed tar exactly as given. A broken archive stores nothing.
fn write_layer(blobs: &berth_store::BlobStore, source: Box<dyn Read + Send>) -> Result<Layer> {
    let mut source = std::io::BufReader::with_capacity(1 << 20, source);
    let magic = {
        use std::io::BufRead;
        source.fill_buf().context("reading the tarball")?.to_vec()
    };
    let tar_stream: Box<dyn Read + Send> = match magic.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(source)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            bail!("zstd-compressed tarballs are not supported yet: decompress it first (zstd -d)")
        }
        [b'B', b'Z', b'h', ..] | [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            bail!("bzip2/xz-compressed tarballs are not supported: decompress it first")
        }
        [] => bail!("the tarball is empty"),
        _ => Box::new(source),
    };
    let writer = blobs.writer()?;
    let mut tee = Tee {
        inner: tar_stream,
        hasher: berth_oci::Algorithm::Sha256.hasher(),
        sink: flate2::write::GzEncoder::new(WriterSink(writer), flate2::Compression::default()),
    };
    let result = (|| -> Result<()> {
        let mut entries = 0usize;
        {
            // PAX records and long names are held in memory by the tar
            // reader: bounded.
            let (input, budget) =
                berth_layer::headers::budgeted(&mut tee, berth_layer::headers::MAX_HEADER_BYTES);
            let mut archive = tar::Archive::new(input);
            for entry in budget.entries(archive.entries().context("reading the tarball")?) {
                berth_copy::staging::check()?;
                let mut entry = entry.context("the tarball is truncated or corrupt")?;
                // Reading the data drives it through the tee; the tar
                // reader also checks each header's checksum.
                std::io::copy(&mut entry, &mut std::io::sink())
                    .context("the tarball is truncated or corrupt")?;
                entries += 1;
            }
        }
        if entries == 0 {
            bail!("the tarball holds no files: is it a tar archive?");
        }
        // The end-of-archive blocks and padding belong to the layer too.
        std::io::copy(&mut tee, &mut std::io::sink()).context("reading the tarball")?;
        Ok(())
    })();
    let Tee { hasher, sink, .. } = tee;
    let mut writer = match sink.finish() {
        Ok(WriterSink(w)) => w,
        Err(e) => return Err(anyhow!(e).context("compressing the layer")),
    };
    if let Err(e) = result {
        writer.discard();
        return Err(e);
    }
    let digest = writer.current_digest();
    match writer.commit(&digest, None) {
        Ok(size) => Ok(Layer {
            digest,
            size,
            diff_id: hasher.finish(),
        }),
        Err(e) => {
            writer.discard();
            Err(e.into())
        }
    }
}

/// Where a URL download's failure is kept, so the import reports it (a
/// timeout is exit code 6) rather than the tar reader's "truncated".
type DownloadFailure = std::sync::Arc<std::sync::Mutex<Option<berth_client::Error>>>;

/// A response body as a `Read` for the blocking tar reader, fed by a task
/// through a bounded channel (a few chunks in memory, nothing on disk).
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    failure: DownloadFailure,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => {
                    if let Some(e) = self.failure.lock().unwrap().as_ref() {
                        return Err(std::io::Error::other(e.to_string()));
                    }
                    return Ok(0);
                }
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.split_off(n);
        Ok(n)
    }
}

/// Opens the import source: `-`, an http(s) URL (streamed, within
/// `BERTH_MAX_DOWNLOAD_BYTES` and the idle timeout), or a file.
async fn open_source(source: &str) -> Result<(Box<dyn Read + Send>, Option<DownloadFailure>)> {
    if source == "-" {
        return Ok((Box::new(std::io::stdin()), None));
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        use futures_util::StreamExt;
        let shown = berth_build::remote_source::redact(source);
        let fetched = berth_client::fetch::fetch(
            source,
            &shown,
            concat!("berth/", env!("CARGO_PKG_VERSION")),
            berth_client::Timeouts::from_env(),
            berth_client::fetch::max_download_bytes(),
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let failure = DownloadFailure::default();
        let slot = failure.clone();
        let mut body = fetched.body;
        tokio::spawn(async move {
            while let Some(item) = body.next().await {
                match item {
                    Ok(chunk) => {
                        if tx.send(chunk).await.is_err() {
                            return; // the reader stopped (it failed)
                        }
                    }
                    Err(e) => {
                        *slot.lock().unwrap() = Some(e);
                        return;
                    }
                }
            }
        });
        let reader = BodyReader {
            rx,
            current: Bytes::new(),
            failure: failure.clone(),
        };
        return Ok((Box::new(reader), Some(failure)));
    }
    let f = std::fs::File::open(source).with_context(|| format!("cannot open {source}"))?;
    Ok((Box::new(f), None))
}

pub fn import(root: Option<PathBuf>, args: ImportArgs) -> Result<()> {
    // Everything that can be refused is checked before anything is stored.
    let mut config = ContainerConfig::default();
    apply_changes(&mut config, &args.changes)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::current(),
    };
    let target = match &args.reference {
        Some(r) => {
            let l = Local::parse(r)?;
            if l.tag().is_none() {
                bail!("{r}: import needs NAME[:TAG], not a digest");
            }
            Some(l)
        }
        None => None,
    };
    let created = created_time()?;
    let local = open(root)?;
    let rt = runtime()?;
    let digest = rt.block_on(async {
        let (source, failure) = open_source(&args.source).await?;
        let blobs = local.blobs().clone();
        let layer = tokio::task::spawn_blocking(move || write_layer(&blobs, source))
            .await
            .context("the import task failed")?;
        // A failed download is the reason, whatever the tar reader saw.
        let layer = match (layer, failure.and_then(|f| f.lock().unwrap().take())) {
            (Err(_), Some(e)) => Err(anyhow!(e)),
            (r, _) => r,
        }
        .with_context(|| format!("importing {}", args.source))?;

        let image = ImageConfig {
            created: Some(created.clone()),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config,
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer.diff_id.to_string()],
            },
            history: vec![History {
                created: Some(created),
                comment: Some(
                    args.message
                        .clone()
                        .unwrap_or_else(|| format!("Imported from {}", args.source)),
                ),
                ..History::default()
            }],
            ..ImageConfig::default()
        };
        let config_bytes = serde_json::to_vec(&image)?;
        let config_digest = Digest::sha256_of(&config_bytes);
        let mut w = local.blobs().writer()?;
        w.write(&config_bytes)?;
        w.commit(&config_digest, Some(config_bytes.len() as u64))?;

        let repo = target.as_ref().map_or(UNNAMED_REPO, |t| t.repo.as_str());
        local.link_blob(repo, &layer.digest).await?;
        local.link_blob(repo, &config_digest).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {
                "mediaType": media_type::OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": [{
                "mediaType": OCI_LAYER_GZIP,
                "digest": layer.digest.to_string(),
                "size": layer.size,
            }],
        });
        let bytes = serde_json::to_vec(&manifest)?;
        let tag = target.as_ref().and_then(|t| t.tag());
        let digest = local
            .put_manifest(repo, tag, Bytes::from(bytes), media_type::OCI_MANIFEST)
            .await?;
        anyhow::Ok(digest)
    })?;
    println!("{digest}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn changes_apply_like_docker_import() {
        let mut c = ContainerConfig::default();
        let changes: Vec<String> = [
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /bin/init --flag",
            "ENV A=1 B=\"two words\"",
            "ENV A 3 and more",
            "EXPOSE 80 53/udp",
            "LABEL org.example=\"x y\" k=v",
            "USER 1000:1000",
            "WORKDIR /srv",
            "WORKDIR app",
            "VOLUME [\"/data\"]",
            "ONBUILD RUN make",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        apply_changes(&mut c, &changes).unwrap();
        assert_eq!(c.cmd.unwrap(), ["sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "/bin/init --flag"]);
        assert_eq!(c.env.unwrap(), ["B=two words", "A=3 and more"]);
        let ports: Vec<_> = c.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.labels.unwrap()["org.example"], "x y");
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.working_dir.as_deref(), Some("/srv/app"));
        assert!(c.volumes.unwrap().contains_key("/data"));
        assert_eq!(c.on_build.unwrap(), ["RUN make"]);
    }

    #[test]
    fn unsupported_or_malformed_changes_are_refused() {
        let mut c = ContainerConfig::default();
        for bad in [
            "RUN make",
            "COPY a b",
            "CMD",
            "EXPOSE http",
            "ENV =x",
            "LABEL \"open",
        ] {
            let err = apply_changes(&mut c, &[bad.to_string()]).unwrap_err();
            assert!(format!("{err:#}").contains("--change"), "{bad}: {err:#}");
        }
        let err = apply_changes(&mut c, &["RUN make".into()]).unwrap_err();
        assert!(err.to_string().contains("supported: CMD"), "{err}");
    }

    #[test]
    fn digest_prefixes() {
        assert_eq!(digest_prefix("abcd12").as_deref(), Some("sha256:abcd12"));
        assert_eq!(digest_prefix("sha256:ab12").as_deref(), Some("sha256:ab12"));
        assert_eq!(digest_prefix("abc"), None);
        assert_eq!(digest_prefix("alpine"), None);
        assert_eq!(digest_prefix("ABCD12"), None);
    }
}
