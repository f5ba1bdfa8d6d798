//! RUN heredocs as BuildKit's dockerfile frontend (>= 1.4) runs them
//! (`dispatchRun`):
//!
//! - `RUN <<EOF` alone: the body is the script. A body starting with `#!`
//!   is written to a file mounted read-only at `/dev/pipes/<name>` (mode
//!   0755) and that file is run through the shell, so its interpreter runs
//!   it; any other body is given to the shell as its command string.
//! - Anything else (`RUN <<EOF bash`, `RUN cat <<A - <<B`, `RUN 3<<EOF ...`):
//!   the command line and every body with its terminator are joined back
//!   into one script for the shell, which then does the redirections
//!   itself (stdin, extra file descriptors, `<<-` tab stripping, expansion
//!   of unquoted bodies).
//!
//! BuildKit ignores the quoted/unquoted distinction for the first form
//! (the body is a script either way) and so does berth.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cache::CacheKey;
use crate::ops::Heredoc;
use crate::{BuildError, Result};

/// Where BuildKit mounts a heredoc script that has an interpreter line.
pub const PIPES_DIR: &str = "/dev/pipes";

/// How a heredoc RUN runs: the one argument given to the shell, and the
/// script file to mount for a `#!` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunScript {
    /// The shell's command string (`sh -c <arg>`).
    pub arg: String,
    pub file: Option<ScriptFile>,
}

/// A heredoc body run as an executable file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptFile {
    /// The heredoc's name: the file is `/dev/pipes/<name>`.
    pub name: String,
    pub content: String,
}

impl ScriptFile {
    pub fn target(&self) -> String {
        format!("{PIPES_DIR}/{}", self.name)
    }
}

/// The script of a shell-form RUN with heredocs; `None` without heredocs
/// (the command runs as written).
pub fn run_script(command: &str, docs: &[Heredoc]) -> Option<RunScript> {
    let first = docs.first()?;
    if berth_dockerfile::parse_heredoc_word(command).is_some() {
        let data = first.body();
        if data.starts_with("#!") {
            let file = ScriptFile {
                name: first.name.clone(),
                content: data,
            };
            return Some(RunScript {
                arg: file.target(),
                file: Some(file),
            });
        }
        return Some(RunScript {
            arg: data,
            file: None,
        });
    }
    let mut script = command.to_string();
    for doc in docs {
        script.push('\n');
        script.push_str(&doc.content);
        script.push_str(&doc.name);
    }
    Some(RunScript {
        arg: script,
        file: None,
    })
}

/// The step's cache key with the script file's content in it (the command
/// line only names the file).
pub fn key_with_script(key: CacheKey, script: Option<&ScriptFile>) -> CacheKey {
    match script {
        None => key,
        Some(f) => CacheKey::of(&json!({
            "run": key, "script": {"name": f.name, "content": f.content},
        })),
    }
}

/// Writes the script under `scratch_dir` and returns its read-only mount
/// at `/dev/pipes/<name>`. A file of the builder's filesystem, not a
/// tmpfs: the sandbox's in-memory files live on a `noexec` mount.
pub fn script_mount(
    script: Option<&ScriptFile>,
    scratch_dir: &Path,
) -> Result<Option<berth_sandbox::Mount>> {
    let Some(f) = script else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    // The name is the heredoc word; it must stay one file name.
    if f.name.is_empty() || f.name.contains(['/', '\0']) || f.name == "." || f.name == ".." {
        return Err(BuildError::Dockerfile(format!(
            "heredoc name {:?} cannot be used as the file name of a script (rename the heredoc)",
            f.name
        )));
    }
    let dir = scratch_dir.join("heredoc");
    std::fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join(&f.name);
    std::fs::write(&path, f.content.as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(Some(berth_sandbox::Mount {
        target: PathBuf::from(f.target()),
        kind: berth_sandbox::MountKind::Bind {
            source: path,
            readonly: true,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, content: &str, chomp: bool) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
            chomp,
        }
    }

    #[test]
    fn no_heredocs_no_script() {
        assert_eq!(run_script("echo hi", &[]), None);
    }

    #[test]
    fn lone_heredoc_body_is_the_script() {
        let s = run_script("<<EOF", &[doc("EOF", "echo a\necho b\n", false)]).unwrap();
        assert_eq!(s.arg, "echo a\necho b\n");
        assert_eq!(s.file, None);
    }

    #[test]
    fn chomped_lone_heredoc_loses_its_tabs() {
        let s = run_script("<<-EOF", &[doc("EOF", "\techo a\n\t\techo b\n", true)]).unwrap();
        assert_eq!(s.arg, "echo a\necho b\n");
    }

    #[test]
    fn shebang_body_becomes_a_file() {
        let s = run_script(
            "<<'PY'",
            &[doc("PY", "#!/usr/bin/python3\nprint(1)\n", false)],
        )
        .unwrap();
        assert_eq!(s.arg, "/dev/pipes/PY");
        let f = s.file.unwrap();
        assert_eq!(f.content, "#!/usr/bin/python3\nprint(1)\n");
        assert_eq!(f.target(), "/dev/pipes/PY");
    }

    #[test]
    fn heredoc_with_a_command_goes_to_the_shell() {
        let s = run_script("<<EOF bash", &[doc("EOF", "echo $0\n", false)]).unwrap();
        assert_eq!(s.arg, "<<EOF bash\necho $0\nEOF");
        assert_eq!(s.file, None);
    }

    #[test]
    fn several_heredocs_are_joined_in_order_raw() {
        let s = run_script(
            "cat <<A - 3<<-B",
            &[doc("A", "one\n", false), doc("B", "\ttwo\n", true)],
        )
        .unwrap();
        // The shell strips the tabs of `<<-` itself.
        assert_eq!(s.arg, "cat <<A - 3<<-B\none\nA\n\ttwo\nB");
    }

    #[test]
    fn script_content_is_in_the_key() {
        let k = CacheKey::of(&json!({"x": 1}));
        assert_eq!(key_with_script(k.clone(), None), k);
        let a = ScriptFile {
            name: "S".into(),
            content: "#!/bin/sh\necho 1\n".into(),
        };
        let b = ScriptFile {
            content: "#!/bin/sh\necho 2\n".into(),
            ..a.clone()
        };
        assert_ne!(
            key_with_script(k.clone(), Some(&a)),
            key_with_script(k, Some(&b))
        );
    }

    #[test]
    fn script_file_is_executable_and_mounted_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = ScriptFile {
            name: "EOF".into(),
            content: "#!/bin/sh\n".into(),
        };
        let m = script_mount(Some(&f), dir.path()).unwrap().unwrap();
        assert_eq!(m.target, PathBuf::from("/dev/pipes/EOF"));
        let berth_sandbox::MountKind::Bind { source, readonly } = m.kind else {
            panic!("not a bind mount");
        };
        assert!(readonly);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&source).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read_to_string(source).unwrap(), "#!/bin/sh\n");
    }
}
