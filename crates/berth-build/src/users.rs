//! `USER` and `--chown` values resolved through the stage's own
//! `/etc/passwd` and `/etc/group`, as Docker does.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Reads `rel` (e.g. `etc/passwd`) from a stack of unpacked layers
/// (topmost first), honouring whiteouts.
pub fn read_from_layers(lowers: &[PathBuf], rel: &str) -> Option<Vec<u8>> {
    for dir in lowers {
        let p = dir.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_char_device() => return None,
            Ok(m) if m.is_file() => return fs::read(&p).ok(),
            Ok(_) => return None,
            Err(_) => {
                // An opaque parent hides everything below this layer.
                if let Some(parent) = Path::new(rel).parent() {
                    if is_opaque(&dir.join(parent)) {
                        return None;
                    }
                }
            }
        }
    }
    None
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    let name = c"user.overlay.opaque";
    // SAFETY: valid pointers for the duration of the call.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

fn lookup(db: Option<&[u8]>, name: &str) -> Option<(u32, u32)> {
    let text = String::from_utf8_lossy(db?);
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn by_uid(db: Option<&[u8]>, uid: u32) -> Option<u32> {
    let text = String::from_utf8_lossy(db?);
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[2].parse::<u32>().ok()? == uid)
            .then(|| fields[3].parse().ok())
            .flatten()
    })
}

/// The home directory of `uid` in the stage's `/etc/passwd` (the first
/// entry with that id), or `/` as runc uses when there is none.
pub fn home_dir(uid: u32, lowers: &[PathBuf]) -> String {
    let passwd = read_from_layers(lowers, "etc/passwd");
    let text = String::from_utf8_lossy(passwd.as_deref().unwrap_or_default()).into_owned();
    text.lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 6 && f[2].parse::<u32>().ok()? == uid && !f[5].is_empty())
                .then(|| f[5].to_string())
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Resolves `user[:group]` to numeric ids, plus the user's supplementary
/// groups for RUN. Numeric values need no database; a numeric user without
/// a group gets the passwd entry's group, or 0 like Docker's runtime.
pub fn resolve_user(spec: &str, lowers: &[PathBuf]) -> Result<(u32, u32, Vec<u32>), String> {
    let passwd = read_from_layers(lowers, "etc/passwd");
    let group = read_from_layers(lowers, "etc/group");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, by_uid(passwd.as_deref(), uid).unwrap_or(0)),
        Err(_) => lookup(passwd.as_deref(), u).ok_or_else(|| {
            format!("unable to find user {u}: no matching entries in passwd file")
        })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(group.as_deref(), g).ok_or_else(|| {
                format!("unable to find group {g}: no matching entries in group file")
            })?,
        },
    };
    let extra = if g.is_none() {
        supplementary(group.as_deref(), u, gid)
    } else {
        Vec::new()
    };
    Ok((uid, gid, extra))
}

/// Resolves a `--chown` value. Unlike `USER`, a user without a group gets
/// the same number as group when numeric (Docker's chown rule).
pub fn resolve_chown(spec: &str, lowers: &[PathBuf]) -> Result<(u32, u32), String> {
    let passwd = read_from_layers(lowers, "etc/passwd");
    let group = read_from_layers(lowers, "etc/group");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup(passwd.as_deref(), u)
            .ok_or_else(|| format!("unable to convert uid/gid chown string to host mapping: can't find uid for user {u}: no such user: {u}"))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_group(group.as_deref(), g)
                .ok_or_else(|| format!("unable to convert uid/gid chown string to host mapping: can't find gid for group {g}: no such group: {g}"))?,
        },
    };
    Ok((uid, gid))
}

fn lookup_group(db: Option<&[u8]>, name: &str) -> Option<u32> {
    let text = String::from_utf8_lossy(db?);
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 3 && fields[0] == name)
            .then(|| fields[2].parse().ok())
            .flatten()
    })
}

fn supplementary(db: Option<&[u8]>, user: &str, primary: u32) -> Vec<u32> {
    let Some(db) = db else { return Vec::new() };
    let text = String::from_utf8_lossy(db);
    let mut out: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 {
                return None;
            }
            let gid: u32 = fields[2].parse().ok()?;
            (gid != primary && fields[3].split(',').any(|m| m == user)).then_some(gid)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn home_dir_from_passwd_or_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        let lowers = vec![d.path().to_path_buf()];
        assert_eq!(home_dir(0, &lowers), "/root");
        assert_eq!(home_dir(1000, &lowers), "/home/app");
        assert_eq!(home_dir(4242, &lowers), "/");
    }
    use super::*;

    #[test]
    fn resolves_names_and_numbers() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        fs::create_dir(&etc).unwrap();
        fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            etc.join("group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        )
        .unwrap();
        let l = vec![t.path().to_path_buf()];
        assert_eq!(resolve_user("app", &l).unwrap(), (1000, 1001, vec![50]));
        assert_eq!(resolve_user("app:staff", &l).unwrap(), (1000, 50, vec![]));
        assert_eq!(resolve_user("1000", &l).unwrap().0, 1000);
        assert_eq!(resolve_user("5", &l).unwrap(), (5, 0, vec![]));
        assert!(resolve_user("nobody", &l)
            .unwrap_err()
            .contains("unable to find user nobody"));
        assert_eq!(resolve_chown("app", &l).unwrap(), (1000, 1001));
        assert_eq!(resolve_chown("7", &l).unwrap(), (7, 7));
        assert_eq!(resolve_chown("7:staff", &l).unwrap(), (7, 50));
    }
}
