//! `berth create`: an image of the local store -> a container config, its
//! layers as snapshots (unpacked once, shared with the builder) and a fresh
//! upper directory. Nothing runs yet.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_build::cache::LayerRef;
use berth_build::snapshots::{Snapshots, Snapshotter};
use berth_oci::{Digest, ImageConfig, ImageRef, ManifestKind, ParsedManifest, Reference};

use crate::container::{Bind, Container, NetworkMode, PortMap};
use crate::{names, time, Error, Paths, Result};

/// `docker create` / `docker run` flags this milestone knows.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub image: String,
    pub name: Option<String>,
    /// The command after the image (replaces the image's CMD).
    pub cmd: Vec<String>,
    /// `--entrypoint` (an empty string clears the image's).
    pub entrypoint: Option<String>,
    /// `-e K=V` or `-e K` (the host's value, if set).
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// `-v SRC:DST[:ro|rw]`, SRC an absolute host path.
    pub volumes: Vec<String>,
    pub read_only: bool,
    /// `none`, `host`, `bridge` (the default).
    pub network: Option<String>,
    pub auto_remove: bool,
    pub stop_signal: Option<String>,
    /// `-p [IP:][HOST:]CTR[/tcp]` (TCP only).
    pub publish: Vec<String>,
    /// `--pid container:NAME`.
    pub pid: Option<String>,
}

impl CreateOptions {
    /// The container named by `--network container:NAME` or `--pid
    /// container:NAME`, whose user namespace the caller must enter
    /// ([`crate::enter_namespace`]).
    pub fn join_target(&self) -> Option<&str> {
        let net = self
            .network
            .as_deref()
            .and_then(|n| n.strip_prefix("container:"));
        let pid = self
            .pid
            .as_deref()
            .and_then(|n| n.strip_prefix("container:"));
        net.or(pid)
    }
}

/// A resolved image of the local store.
struct Image {
    config_digest: Digest,
    config: ImageConfig,
    layers: Vec<LayerRef>,
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn platform_matches(p: &serde_json::Value, os: &str, arch: &str) -> bool {
    let f = |k: &str| p.get(k).and_then(|v| v.as_str());
    f("os") == Some(os) && f("architecture") == Some(arch)
}

fn resolve_image(root: &Path, name: &str) -> Result<(Image, berth_root::LocalRoot)> {
    let missing = || {
        Error::NotFound(format!(
            "Unable to find image '{name}' in the local store (berth pull {name}, berth build -t {name} or berth load it first)"
        ))
    };
    let r = ImageRef::parse(name)
        .map_err(|e| Error::Invalid(format!("invalid reference format {name:?}: {e}")))?;
    let reference = match (&r.digest, &r.tag) {
        (Some(d), _) => Reference::Digest(d.clone()),
        (None, Some(t)) => Reference::Tag(t.clone()),
        (None, None) => Reference::Tag("latest".into()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let local = berth_root::LocalRoot::open(root)
        .map_err(|e| Error::Failed(format!("opening the local root {}: {e}", root.display())))?;
    let get = |reference: &Reference| {
        rt.block_on(local.manifest(&r.repository, reference))
            .map_err(|e| Error::Failed(format!("reading {name} from the local store: {e}")))
    };
    let mut entry = get(&reference)?.ok_or_else(missing)?;
    let parse = |bytes: &[u8], mt: &str| {
        ParsedManifest::parse(bytes, Some(mt))
            .map_err(|e| Error::Failed(format!("{name}: invalid manifest: {e}")))
    };
    let mut parsed = parse(&entry.bytes, &entry.media_type)?;
    let host = berth_build::host_platform();
    if parsed.kind == ManifestKind::Index {
        let child = parsed
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| platform_matches(p, &host.os, &host.architecture))
            })
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{name} has no image for this machine's platform ({host})"
                ))
            })?;
        entry = get(&Reference::Digest(child.digest.clone()))?.ok_or_else(|| {
            Error::NotFound(format!(
                "{name}: the image for {host} ({}) is not in the local store",
                child.digest
            ))
        })?;
        parsed = parse(&entry.bytes, &entry.media_type)?;
    }
    let config_desc = parsed
        .config
        .clone()
        .ok_or_else(|| Error::Failed(format!("{name}: the manifest names no config")))?;
    let bytes = berth_build::image::read_blob(local.blobs(), &config_desc.digest)
        .map_err(|e| Error::Failed(format!("{name}: {e}")))?;
    let config: ImageConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Failed(format!("{name}: invalid image config: {e}")))?;
    if !config.architecture.is_empty() && config.architecture != host.architecture {
        return Err(Error::Invalid(format!(
            "{name} is for {}/{}, this machine is {host} (running other platforms is not supported yet)",
            config.os, config.architecture
        )));
    }
    let layers = berth_build::image::layer_refs(&parsed.layers, &config)
        .map_err(|e| Error::Failed(format!("{name}: {e}")))?;
    let img = Image {
        config_digest: config_desc.digest,
        config,
        layers,
    };
    drop(rt);
    // Snapshots unpack from the blobs: the store stays open until then.
    Ok((img, local))
}

/// The image's layers as unpacked directories, topmost first (the
/// builder's snapshots: unpacked at most once per root).
fn lowers(
    paths: &Paths,
    blobs: &berth_store::BlobStore,
    layers: &[LayerRef],
) -> Result<(Vec<PathBuf>, Snapshotter)> {
    let snapshots =
        Snapshots::open(&paths.root).map_err(|e| Error::io("opening the snapshots", e))?;
    let mut out: Vec<PathBuf> = Vec::new();
    for l in layers.iter().rev() {
        let dir = snapshots
            .ensure(blobs, l)
            .map_err(|e| Error::Failed(format!("unpacking layer {}: {e}", l.digest)))?;
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        // The same layer twice is one directory twice, which overlayfs
        // refuses; the topmost copy alone gives the same tree.
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    Ok((out, crate::cached::snapshotter(paths, &snapshots)))
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

/// Sets `kv` in `env`, replacing the same key.
fn set_env(env: &mut Vec<String>, kv: String) {
    let key = env_key(&kv).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// `-e K=V` as given; `-e K` takes the host's value, or is dropped.
fn user_env(entry: &str) -> Option<String> {
    if entry.contains('=') {
        return Some(entry.to_string());
    }
    std::env::var(entry).ok().map(|v| format!("{entry}={v}"))
}

fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path)
        .map_err(|e| Error::Invalid(format!("--env-file {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(user_env)
        .collect())
}

/// `-p [IP:][HOST:]CTR[/tcp]`; an empty or missing host port picks one.
pub fn parse_port(p: &str) -> Result<PortMap> {
    let bad = |why: &str| Error::Invalid(format!("invalid port specification {p:?}: {why}"));
    let (spec, proto) = match p.rsplit_once('/') {
        Some((s, proto)) => (s, proto),
        None => (p, "tcp"),
    };
    if proto != "tcp" {
        return Err(bad("only tcp ports can be published yet"));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => return Err(bad("use [IP:][HOST:]CONTAINER[/tcp]")),
    };
    let port = |s: &str| s.parse::<u16>().ok().filter(|&n| n > 0);
    let container_port = port(ctr).ok_or_else(|| bad("the container port must be 1-65535"))?;
    let host_port = if host.is_empty() {
        0
    } else {
        port(host).ok_or_else(|| bad("the host port must be 1-65535"))?
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("the host address must be an IP address"));
    }
    Ok(PortMap {
        host_ip: ip.to_string(),
        host_port,
        container_port,
    })
}

fn parse_volume(v: &str) -> Result<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => {
            return Err(Error::Invalid(format!(
                "invalid volume specification {v:?}: use SRC:DST[:ro]"
            )))
        }
    };
    let readonly = match mode {
        "" | "rw" => false,
        "ro" => true,
        other => {
            return Err(Error::Invalid(format!(
                "invalid mode {other:?} in volume {v:?}: use ro or rw"
            )))
        }
    };
    if !src.starts_with('/') {
        return Err(Error::Invalid(format!(
            "volume {v:?}: named volumes are not supported yet; the source must be an absolute host path"
        )));
    }
    if !dst.starts_with('/') {
        return Err(Error::Invalid(format!(
            "invalid volume {v:?}: the container path must be absolute"
        )));
    }
    let source = fs::canonicalize(src).map_err(|e| {
        Error::Invalid(format!("invalid volume {v:?}: bind source path {src}: {e}"))
    })?;
    Ok(Bind {
        source,
        target: PathBuf::from(dst),
        readonly,
    })
}

/// Whether `rel` is a directory in the stack of layers (topmost first,
/// stopping at a file or whiteout that hides it).
fn dir_in_layers(lowers: &[PathBuf], rel: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    for l in lowers {
        match fs::symlink_metadata(l.join(rel)) {
            Ok(m) if m.is_dir() => return true,
            Ok(m) if m.file_type().is_char_device() => return false,
            Ok(m) if m.file_type().is_symlink() => {
                // Resolved in the merged root at start; assume it is one.
                return true;
            }
            Ok(_) => return false,
            Err(_) => {}
        }
    }
    false
}

/// Create a container. The caller is in berth's build namespace (rootless:
/// the snapshots and the upper directory belong to the mapped ids).
/// Returns the container and warnings for the user.
pub fn create(paths: &Paths, opts: &CreateOptions) -> Result<(Container, Vec<String>)> {
    let mut warnings = Vec::new();
    if let Some(n) = &opts.name {
        if !names::valid(n) {
            return Err(Error::Invalid(format!(
                "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
    }
    let binds = opts
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    let ports = opts
        .publish
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let stop_signal_given = opts
        .stop_signal
        .as_deref()
        .map(crate::signals::parse)
        .transpose()
        .map_err(Error::Invalid)?;
    let requested = opts.network.clone().unwrap_or_else(|| "bridge".into());
    let network = match requested.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        "bridge" | "default" => match berth_sandbox::isolated_network() {
            Ok(_) => NetworkMode::Bridge,
            Err(why) => {
                warnings.push(format!(
                    "the default network needs slirp4netns, but {why}: the container gets loopback only (as --network none)"
                ));
                NetworkMode::None
            }
        },
        other if other.starts_with("container:") => NetworkMode::Container,
        other => {
            return Err(Error::Invalid(format!(
                "--network {other}: use none, host or bridge"
            )))
        }
    };

    let target = |what: &str, name: &str| -> Result<String> {
        let c = crate::container::find(paths, name).map_err(|_| {
            Error::NotFound(format!(
                "{what} container:{name}: No such container: {name}"
            ))
        })?;
        Ok(c.id)
    };
    let join_net = match requested.strip_prefix("container:") {
        Some(n) => Some(target("--network", n)?),
        None => None,
    };
    let join_pid = match opts.pid.as_deref() {
        None => None,
        Some(p) => match p.strip_prefix("container:") {
            Some(n) => Some(target("--pid", n)?),
            None => {
                return Err(Error::Invalid(format!(
                    "--pid {p}: only container:NAME is supported yet"
                )))
            }
        },
    };
    if let (Some(a), Some(b)) = (&join_net, &join_pid) {
        if a != b {
            return Err(Error::Invalid(
                "--network container: and --pid container: must name the same container (for now)"
                    .into(),
            ));
        }
    }
    if join_net.is_some() && !ports.is_empty() {
        return Err(Error::Invalid(
            "conflicting options: port publishing and the container type network mode".into(),
        ));
    }
    if network == NetworkMode::Host && !ports.is_empty() {
        warnings.push("published ports are discarded when using host network mode".into());
    }
    let ports = if network == NetworkMode::Host {
        Vec::new()
    } else {
        ports
    };
    let (image, local) = resolve_image(&paths.root, &opts.image)?;
    let cfg = &image.config.config;
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !opts.cmd.is_empty() {
        opts.cmd.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(Error::Invalid(format!(
            "no command specified: {} has no ENTRYPOINT or CMD; give one after the image",
            opts.image
        )));
    }
    let (lowers, snapshotter) = lowers(paths, local.blobs(), &image.layers)?;
    drop(local);
    if lowers.is_empty() {
        return Err(Error::Invalid(format!(
            "{} has no layers: there is nothing to run",
            opts.image
        )));
    }
    let user = opts
        .user
        .clone()
        .or_else(|| cfg.user.clone())
        .unwrap_or_default();
    let (uid, gid, groups) = if user.is_empty() {
        (0, 0, Vec::new())
    } else {
        berth_build::users::resolve_user(&user, &lowers).map_err(Error::Invalid)?
    };
    let working_dir = opts
        .workdir
        .clone()
        .or_else(|| cfg.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !working_dir.starts_with('/') {
        return Err(Error::Invalid(format!(
            "the working directory {working_dir:?} is invalid: it needs to be an absolute path"
        )));
    }

    let id = hex(&random_bytes(32)?);
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    if hostname.is_empty() || hostname.len() > 63 {
        return Err(Error::Invalid(format!("invalid hostname {hostname:?}")));
    }
    let mut env: Vec<String> = Vec::new();
    for e in cfg.env.clone().unwrap_or_default() {
        set_env(&mut env, e);
    }
    if !env.iter().any(|e| env_key(e) == "PATH") {
        env.insert(0, format!("PATH={}", berth_sandbox::DEFAULT_PATH));
    }
    for f in &opts.env_files {
        for e in read_env_file(f)? {
            set_env(&mut env, e);
        }
    }
    for e in opts.env.iter().filter_map(|e| user_env(e)) {
        set_env(&mut env, e);
    }
    if !env.iter().any(|e| env_key(e) == "HOSTNAME") {
        env.insert(1.min(env.len()), format!("HOSTNAME={hostname}"));
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!(
            "HOME={}",
            berth_build::users::home_dir(uid, &lowers)
        ));
    }
    let stop_signal = match stop_signal_given {
        Some(s) => s,
        None => match cfg.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => crate::signals::parse(s).unwrap_or(libc::SIGTERM),
            None => libc::SIGTERM,
        },
    };

    // Claim the name: symlink(2) fails if another container has it.
    let links = paths.root.join("container-names");
    fs::create_dir_all(&links)
        .map_err(|e| Error::io(format!("creating {}", links.display()), e))?;
    let name = match &opts.name {
        Some(n) => {
            claim(paths, n, &id).map_err(|e| match e {
                Error::Conflict(_) => {
                    let other = fs::read_link(paths.name_link(n))
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Error::Conflict(format!(
                        "Conflict. The container name \"/{n}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    ))
                }
                other => other,
            })?;
            n.clone()
        }
        None => {
            let mut retry = 0;
            loop {
                let n = names::random(&random_bytes(5)?, retry);
                match claim(paths, &n, &id) {
                    Ok(()) => break n,
                    Err(Error::Conflict(_)) if retry < 10 => retry += 1,
                    Err(e) => return Err(e),
                }
            }
        }
    };
    let container = Container {
        id: id.clone(),
        name: name.clone(),
        created_ns: time::now_ns(),
        image: opts.image.clone(),
        image_id: image.config_digest.to_string(),
        lowers,
        overlay: snapshotter == Snapshotter::Overlay,
        entrypoint,
        cmd,
        args,
        env,
        working_dir,
        user,
        uid,
        gid,
        groups,
        hostname,
        network,
        network_requested: requested,
        binds,
        readonly_rootfs: opts.read_only,
        auto_remove: opts.auto_remove,
        stop_signal,
        labels: cfg.labels.clone().unwrap_or_default(),
        ports,
        join_net,
        join_pid,
    };
    if let Err(e) = lay_out(paths, &container) {
        let _ = fs::remove_dir_all(paths.dir(&id));
        let _ = fs::remove_file(paths.name_link(&name));
        return Err(e);
    }
    Ok((container, warnings))
}

fn claim(paths: &Paths, name: &str, id: &str) -> Result<()> {
    let link = paths.name_link(name);
    match std::os::unix::fs::symlink(id, &link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A name left by a container whose directory is gone is free.
            let owner = fs::read_link(&link).unwrap_or_default();
            if !paths
                .dir(&owner.to_string_lossy())
                .join("config.json")
                .exists()
            {
                let _ = fs::remove_file(&link);
                if std::os::unix::fs::symlink(id, &link).is_ok() {
                    return Ok(());
                }
            }
            Err(Error::Conflict(name.to_string()))
        }
        Err(e) => Err(Error::io(format!("creating {}", link.display()), e)),
    }
}

/// The container's directory: upper + work (or the copied root), the
/// working directory when the image lacks it (Docker creates it), config.
fn lay_out(paths: &Paths, c: &Container) -> Result<()> {
    let dir = paths.dir(&c.id);
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let rel = Path::new(c.working_dir.trim_start_matches('/'));
    if c.overlay {
        for d in [c.upper(paths), c.work(paths)] {
            fs::create_dir(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        if !rel.as_os_str().is_empty() && !dir_in_layers(&c.lowers, rel) {
            make_workdir(&c.upper(paths), rel, c)?;
        }
    } else {
        let root = c.rootfs_dir(paths);
        fs::create_dir(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        berth_layer::materialize(&c.lowers, &root)
            .map_err(|e| Error::Failed(format!("copying the image's layers: {e}")))?;
        if !rel.as_os_str().is_empty() && !root.join(rel).is_dir() {
            make_workdir(&root, rel, c)?;
        }
    }
    fs::File::create(paths.log_file(&c.id)).map_err(|e| Error::io("creating the log file", e))?;
    c.save(paths)
}

fn make_workdir(base: &Path, rel: &Path, c: &Container) -> Result<()> {
    let p = base.join(rel);
    fs::create_dir_all(&p).map_err(|e| {
        Error::io(
            format!("creating the working directory {}", c.working_dir),
            e,
        )
    })?;
    // Docker makes it owned by the container's user.
    let _ = std::os::unix::fs::chown(&p, Some(c.uid), Some(c.gid));
    Ok(())
}
