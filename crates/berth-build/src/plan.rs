//! From Dockerfile text to the stages a build runs: parse, resolve global
//! ARGs (with the predefined platform ARGs), expand each FROM, find the
//! target and every stage it reaches through FROM, `COPY --from` and
//! `RUN --mount from=` (only those are built, like BuildKit).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use berth_dockerfile::{Command, Dockerfile, Instruction};

use crate::{BuildError, BuildOptions, Result};

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference (already expanded).
    Image(String),
}

/// One instruction, ready to be expanded and applied.
#[derive(Debug, Clone)]
pub struct Step {
    pub instruction: Instruction,
    pub escape: char,
    /// `Dockerfile:12` (the first line of the instruction).
    pub location: String,
    /// The instruction as written (continuations joined).
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub name: Option<String>,
    pub base: BaseRef,
    /// `FROM --platform=...`: the platform of this stage's base image (the
    /// build's target platform without it).
    pub platform: Option<crate::Platform>,
    pub instructions: Vec<Step>,
    pub location: String,
    pub text: String,
}

#[derive(Debug)]
pub struct Plan {
    pub stages: Vec<PlannedStage>,
    pub target: usize,
    /// Stages to build, in Dockerfile order.
    pub needed: Vec<usize>,
    /// The target and the stages it is built `FROM` (transitively): the
    /// only stages whose layers can be part of the image. The others'
    /// steps keep their results as snapshots only (no layer blob), as
    /// BuildKit keeps snapshots and makes blobs only for what it exports.
    pub image_stages: BTreeSet<usize>,
    /// Global ARG values (and the predefined ones), for stages' `ARG name`.
    pub global_args: BTreeMap<String, Option<String>>,
    pub escape: char,
    /// BuildKit's build checks over the stages built (`# check=`).
    pub checks: berth_dockerfile::Checks,
}

impl Plan {
    /// A stage by `AS` name (case-insensitive) or by index.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }
}

/// ARGs every build knows without a declaration.
pub fn is_builtin_arg(name: &str) -> bool {
    matches!(
        name,
        "TARGETPLATFORM"
            | "TARGETOS"
            | "TARGETARCH"
            | "TARGETVARIANT"
            | "BUILDPLATFORM"
            | "BUILDOS"
            | "BUILDARCH"
            | "BUILDVARIANT"
            | "HTTP_PROXY"
            | "http_proxy"
            | "HTTPS_PROXY"
            | "https_proxy"
            | "FTP_PROXY"
            | "ftp_proxy"
            | "NO_PROXY"
            | "no_proxy"
            | "ALL_PROXY"
            | "all_proxy"
            | "SOURCE_DATE_EPOCH"
    ) || name.starts_with("BUILDKIT_")
}

fn platform_args(opts: &BuildOptions) -> Vec<(String, String)> {
    let t = &opts.platform;
    let b = crate::host_platform();
    vec![
        ("TARGETPLATFORM".into(), t.to_string()),
        ("TARGETOS".into(), t.os.clone()),
        ("TARGETARCH".into(), t.architecture.clone()),
        (
            "TARGETVARIANT".into(),
            t.variant.clone().unwrap_or_default(),
        ),
        ("BUILDPLATFORM".into(), b.to_string()),
        ("BUILDOS".into(), b.os.clone()),
        ("BUILDARCH".into(), b.architecture.clone()),
        ("BUILDVARIANT".into(), b.variant.clone().unwrap_or_default()),
    ]
}

fn location(opts: &BuildOptions, line: usize) -> String {
    format!("{}:{line}", opts.dockerfile_name)
}

/// `--platform` values as containerd reads them: `linux/arm64`, a bare
/// architecture (`arm64`, the OS is linux), `arm` meaning `arm/v7`, and
/// the common architecture aliases.
fn normalize_platform(s: &str) -> std::result::Result<crate::Platform, String> {
    let lower = s.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [arch] => ("linux", *arch, None),
        [os, arch] => (*os, *arch, None),
        [os, arch, v] => (*os, *arch, Some(v.to_string())),
        _ => return Err(format!("invalid platform {s:?}: use OS/ARCH[/VARIANT]")),
    };
    let arch = match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" => "386",
        "armhf" => "arm",
        other => other,
    };
    let variant = match (arch, variant) {
        ("arm", None) => Some("v7".to_string()),
        ("arm64", Some(v)) if v == "v8" => None,
        (_, v) => v,
    };
    if os.is_empty() || arch.is_empty() {
        return Err(format!("invalid platform {s:?}: use OS/ARCH[/VARIANT]"));
    }
    Ok(crate::Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
        variant,
    })
}

fn dockerfile_error(
    opts: &BuildOptions,
    line: usize,
    text: &str,
    msg: impl std::fmt::Display,
) -> BuildError {
    BuildError::Dockerfile(format!("{}: {msg}\n  >>> {text}", location(opts, line)))
}

pub fn plan(opts: &BuildOptions) -> Result<Plan> {
    let df: Dockerfile = berth_dockerfile::parse(&opts.dockerfile)
        .map_err(|e| BuildError::Dockerfile(e.render(&opts.dockerfile_name)))?;
    if df.stages.is_empty() {
        return Err(BuildError::Dockerfile(format!(
            "{}: the Dockerfile has no FROM instruction (file with no instructions)",
            opts.dockerfile_name
        )));
    }
    let escape = df.escape;
    let mut global: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (k, v) in platform_args(opts) {
        global.insert(k, Some(v));
    }
    for instr in &df.global_args {
        let lookup_map = global.clone();
        let lookup = |n: &str| lookup_map.get(n).cloned().flatten();
        let expanded = instr
            .expand(escape, &lookup)
            .map_err(|e| dockerfile_error(opts, instr.location.start_line, &instr.original, e))?;
        if let Command::Arg(defs) = expanded.command {
            for d in defs {
                let v = opts.build_args.get(&d.name).cloned().or(d.default);
                global.insert(d.name, v);
            }
        }
    }
    let lookup_map = global.clone();
    let lookup = |n: &str| lookup_map.get(n).cloned().flatten();
    let mut stages: Vec<PlannedStage> = Vec::new();
    for s in &df.stages {
        let line = s.location.start_line;
        let base_name = s
            .expand_base(escape, &lookup)
            .map_err(|e| dockerfile_error(opts, line, &s.original, e))?;
        let platform = s
            .expand_platform(escape, &lookup)
            .map_err(|e| dockerfile_error(opts, line, &s.original, e))?
            .map(|p| normalize_platform(&p))
            .transpose()
            .map_err(|e| dockerfile_error(opts, line, &s.original, e))?;
        let lower = base_name.to_ascii_lowercase();
        let base = if lower == "scratch" {
            BaseRef::Scratch
        } else if let Some(i) = stages
            .iter()
            .position(|p| p.name.as_deref() == Some(lower.as_str()))
        {
            BaseRef::Stage(i)
        } else {
            BaseRef::Image(base_name)
        };
        if let Some(name) = &s.name {
            if stages
                .iter()
                .any(|p| p.name.as_deref() == Some(name.as_str()))
            {
                return Err(dockerfile_error(
                    opts,
                    line,
                    &s.original,
                    format!("duplicate stage name {name:?}"),
                ));
            }
        }
        stages.push(PlannedStage {
            name: s.name.clone(),
            base,
            platform,
            instructions: s
                .instructions
                .iter()
                .map(|i| Step {
                    instruction: i.clone(),
                    escape,
                    location: location(opts, i.location.start_line),
                    text: i.original.clone(),
                })
                .collect(),
            location: location(opts, line),
            text: s.original.clone(),
        });
    }
    let target = match &opts.target {
        None => stages.len() - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    BuildError::Dockerfile(format!(
                        "target stage {t:?} could not be found in {}",
                        opts.dockerfile_name
                    ))
                })?
        }
    };
    // Walk the dependencies from the target.
    let mut needed = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        if let BaseRef::Stage(b) = stages[i].base {
            todo.push(b);
        }
        for step in &stages[i].instructions {
            for from in references(&step.instruction, escape, &lookup) {
                let lower = from.to_ascii_lowercase();
                let found = stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .or_else(|| from.parse::<usize>().ok().filter(|n| *n < stages.len()));
                if let Some(j) = found {
                    if j >= i {
                        return Err(dockerfile_error(
                            opts,
                            step.instruction.location.start_line,
                            &step.text,
                            format!("stage {from:?} is not defined before this one (circular or forward reference)"),
                        ));
                    }
                    todo.push(j);
                }
            }
        }
    }
    let mut image_stages = BTreeSet::from([target]);
    let mut i = target;
    while let BaseRef::Stage(b) = stages[i].base {
        image_stages.insert(b);
        i = b;
    }
    let checks = run_checks(opts, &df, &stages, &needed, &global)?;
    Ok(Plan {
        stages,
        target,
        needed: needed.into_iter().collect(),
        image_stages,
        global_args: global,
        escape,
        checks,
    })
}

/// BuildKit's checks, as its converter runs them: over the instructions of
/// the stages it dispatches (the needed ones, in Dockerfile order), with
/// the `# check=` directive, or the `BUILDKIT_DOCKERFILE_CHECK` build arg
/// in its place. ENV keys are checked expanded (against the stage's ARGs
/// and ENVs; a base image's ENV is not known yet and expands empty), ARG
/// names as written, as BuildKit does.
fn run_checks(
    opts: &BuildOptions,
    df: &Dockerfile,
    stages: &[PlannedStage],
    needed: &BTreeSet<usize>,
    global: &BTreeMap<String, Option<String>>,
) -> Result<berth_dockerfile::Checks> {
    use berth_dockerfile::CheckConfig;
    let config = match opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        Some(v) => CheckConfig::parse(v).map_err(|e| {
            BuildError::Dockerfile(format!(
                "failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: {e}"
            ))
        })?,
        None => CheckConfig::from_directive(df)
            .map_err(|e| BuildError::Dockerfile(format!("{}: {e}", opts.dockerfile_name)))?,
    };
    let mut checks = berth_dockerfile::Checks::new(config);
    for &i in needed {
        let mut scope: BTreeMap<String, String> = BTreeMap::new();
        for step in &stages[i].instructions {
            let instr = &step.instruction;
            match &instr.command {
                Command::Env { .. } => {
                    let lookup = |n: &str| scope.get(n).cloned();
                    let expanded = instr
                        .expand(df.escape, &lookup)
                        .unwrap_or_else(|_| instr.clone());
                    checks.instruction(&expanded);
                    if let Command::Env { pairs, .. } = &expanded.command {
                        for p in pairs {
                            scope.insert(p.key.clone(), p.value.clone());
                        }
                    }
                }
                Command::Arg(defs) => {
                    checks.instruction(instr);
                    for d in defs {
                        let v = opts
                            .build_args
                            .get(&d.name)
                            .cloned()
                            .or_else(|| d.default.clone())
                            .or_else(|| global.get(&d.name).cloned().flatten());
                        if let Some(v) = v {
                            scope.insert(d.name.clone(), v);
                        }
                    }
                }
                _ => checks.instruction(instr),
            }
        }
    }
    Ok(checks)
}

/// Stage or image names an instruction reads from.
fn references(
    instr: &Instruction,
    escape: char,
    lookup: berth_dockerfile::Lookup<'_>,
) -> Vec<String> {
    let expand = |s: &str| {
        berth_dockerfile::expand_word(s, escape, lookup).unwrap_or_else(|_| s.to_string())
    };
    match &instr.command {
        Command::Copy(c) | Command::Add(c) => c.from.as_deref().map(expand).into_iter().collect(),
        Command::Run(r) => r
            .mounts
            .iter()
            .filter_map(|m| {
                let raw = expand(&m.raw);
                raw.split(',')
                    .find_map(|kv| kv.strip_prefix("from=").map(str::to_string))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Go's `filepath.Match` for one path component (berth-context's port).
pub fn component_matches(pattern: &str, name: &str) -> bool {
    berth_context::glob_match(pattern, name)
}

/// Paths matching `pattern` (wildcards per component) inside a root,
/// relative to it, sorted. A pattern without wildcards yields itself if it
/// exists.
pub fn glob_in_root(root: RawFd, pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let clean = crate::stage::clean_path(&format!("/{pattern}"));
    let rel = clean.trim_start_matches('/');
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    if rel.is_empty() {
        return Ok(current);
    }
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for base in &current {
            if crate::stage::has_wildcard(comp) {
                let dir = match crate::fsops::open_in_root(
                    root,
                    base,
                    libc::O_DIRECTORY | libc::O_RDONLY,
                ) {
                    Ok(d) => d,
                    Err(_) => continue,
                };
                use std::os::fd::AsRawFd;
                for name in crate::fsops::list_dir(dir.as_raw_fd())? {
                    if component_matches(comp, &name.to_string_lossy()) {
                        next.push(base.join(name));
                    }
                }
            } else {
                let p = base.join(comp);
                if crate::fsops::open_in_root(root, &p, libc::O_PATH).is_ok() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current.sort();
    Ok(current)
}

/// `true` if `p` names the root itself.
pub fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p == Path::new("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn platforms_normalise_like_containerd() {
        let p = |s: &str| normalize_platform(s).map(|p| p.to_string());
        assert_eq!(p("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(p("arm64").unwrap(), "linux/arm64");
        assert_eq!(p("linux/aarch64").unwrap(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").unwrap(), "linux/arm64");
        assert_eq!(p("linux/arm").unwrap(), "linux/arm/v7");
        assert_eq!(p("Linux/X86_64").unwrap(), "linux/amd64");
        assert!(p("a/b/c/d").is_err());
        assert!(p("linux/").is_err());
    }

    use super::*;

    #[test]
    fn go_match() {
        assert!(component_matches("*.txt", "a.txt"));
        assert!(!component_matches("*.txt", "a.txt.bak"));
        assert!(component_matches("f?le", "file"));
        assert!(component_matches("[a-c]x", "bx"));
        assert!(!component_matches("[^a-c]x", "bx"));
        assert!(component_matches("\\*", "*"));
        assert!(!component_matches("[a", "a"));
    }
}
