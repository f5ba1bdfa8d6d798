//! A container's persistent config (`<root>/containers/<id>/config.json`)
//! and its live state (`<runtime dir>/<id>.json`, written by the supervisor),
//! and finding containers by name, id or id prefix.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Paths, Result};

/// How the container's network is set up (after the fallback: `bridge`
/// without slirp4netns is `None`, with a warning at create).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    None,
    Host,
    Bridge,
    /// `container:NAME`: the network namespace of [`Container::join_net`].
    Container,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
}

/// `-p [IP:][HOST:]CTR[/tcp]`; `host_port` 0 = any free port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMap {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMap {
    /// Docker's `0.0.0.0:8080->80/tcp`.
    pub fn show(&self) -> String {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        format!("{ip}:{}->{}/tcp", self.host_port, self.container_port)
    }
}

/// Everything `create` decided; the supervisor runs exactly this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub created_ns: u64,
    /// The image as the user named it.
    pub image: String,
    /// The image's config digest (Docker's image id).
    pub image_id: String,
    /// Unpacked layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// `false`: the copy-based fallback, the root is `<dir>/rootfs`.
    pub overlay: bool,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `entrypoint + cmd`: what runs.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// As given (`-u` or the image's `User`).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub hostname: String,
    pub network: NetworkMode,
    /// What the user asked for (`bridge` even when it fell back).
    pub network_requested: String,
    pub binds: Vec<Bind>,
    pub readonly_rootfs: bool,
    pub auto_remove: bool,
    /// The image's StopSignal (or `--stop-signal`), as a number.
    pub stop_signal: i32,
    /// The image's labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Published ports as asked for.
    #[serde(default)]
    pub ports: Vec<PortMap>,
    /// `--network container:NAME`: that container's id.
    #[serde(default)]
    pub join_net: Option<String>,
    /// `--pid container:NAME`: that container's id.
    #[serde(default)]
    pub join_pid: Option<String>,
}

impl Container {
    pub fn load(paths: &Paths, id: &str) -> Result<Container> {
        let p = paths.dir(id).join("config.json");
        let bytes = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("No such container: {id}")),
            _ => Error::io(format!("reading {}", p.display()), e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Failed(format!("{} is damaged: {e}", p.display())))
    }

    pub fn save(&self, paths: &Paths) -> Result<()> {
        write_atomic(
            &paths.dir(&self.id).join("config.json"),
            &serde_json::to_vec_pretty(self).expect("serializable"),
        )
    }

    pub fn upper(&self, paths: &Paths) -> PathBuf {
        paths.dir(&self.id).join("upper")
    }

    pub fn work(&self, paths: &Paths) -> PathBuf {
        paths.dir(&self.id).join("work")
    }

    /// The copied root of the fallback.
    pub fn rootfs_dir(&self, paths: &Paths) -> PathBuf {
        paths.dir(&self.id).join("rootfs")
    }

    /// The container whose namespaces this one shares, if any.
    pub fn join_target(&self) -> Option<&str> {
        self.join_net.as_deref().or(self.join_pid.as_deref())
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The state as `ps` shows it: the supervisor's record, corrected when
    /// the supervisor is gone (killed) while the record says running.
    pub fn state(&self, paths: &Paths) -> State {
        let mut st = match fs::read(paths.state_file(&self.id)) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(_) => State::default(),
        };
        if st.status == Status::Running && !st.supervisor_alive() {
            st.status = Status::Exited;
            st.pid = 0;
            st.ports.clear();
            if st.exit_code == 0 {
                st.exit_code = 137;
            }
            if st.finished_ns == 0 {
                st.finished_ns = crate::time::now_ns();
            }
            st.error = "the container's supervisor died (killed?)".into();
        }
        st
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// Host pid of the container's process (0 until started).
    pub pid: u32,
    pub supervisor_pid: u32,
    /// The supervisor's start time (field 22 of /proc/PID/stat), so a
    /// reused pid is not taken for it.
    pub supervisor_start: u64,
    pub started_ns: u64,
    pub finished_ns: u64,
    pub exit_code: i32,
    pub error: String,
    /// Published ports as bound (a free port picked for host port 0).
    #[serde(default)]
    pub ports: Vec<PortMap>,
}

impl State {
    pub fn supervisor_alive(&self) -> bool {
        self.supervisor_pid != 0
            && proc_start_time(self.supervisor_pid) == Some(self.supervisor_start)
    }

    pub fn save(&self, paths: &Paths, id: &str) -> Result<()> {
        fs::create_dir_all(&paths.run)
            .map_err(|e| Error::io(format!("creating {}", paths.run.display()), e))?;
        write_atomic(
            &paths.state_file(id),
            &serde_json::to_vec(self).expect("serializable"),
        )
    }
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks); `None` when
/// the process is gone or a zombie.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), e)
    })
}

/// Every container, oldest first.
pub fn list(paths: &Paths) -> Result<Vec<Container>> {
    let dir = paths.containers();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() != 64 {
            continue;
        }
        // Half-created or half-removed containers have no config.
        if let Ok(c) = Container::load(paths, &name) {
            out.push(c);
        }
    }
    out.sort_by_key(|c| c.created_ns);
    Ok(out)
}

/// A container by name, full id or unique id prefix (Docker's lookup).
pub fn find(paths: &Paths, what: &str) -> Result<Container> {
    let what = what.strip_prefix('/').unwrap_or(what);
    if let Ok(id) = fs::read_link(paths.name_link(what)) {
        if let Ok(c) = Container::load(paths, &id.to_string_lossy()) {
            return Ok(c);
        }
    }
    if what.len() == 64 {
        if let Ok(c) = Container::load(paths, what) {
            return Ok(c);
        }
    }
    if !what.is_empty() && what.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut hits: Vec<Container> = list(paths)?
            .into_iter()
            .filter(|c| c.id.starts_with(what))
            .collect();
        match hits.len() {
            1 => return Ok(hits.remove(0)),
            0 => {}
            _ => {
                return Err(Error::Conflict(format!(
                    "multiple containers match the id prefix {what}: be more specific"
                )))
            }
        }
    }
    Err(Error::NotFound(format!("No such container: {what}")))
}
