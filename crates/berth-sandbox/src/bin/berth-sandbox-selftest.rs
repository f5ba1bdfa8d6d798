//! TEST TOOL ONLY (not shipped): the integration tests of berth-sandbox use
//! this binary as the re-executed helper and as a stand-in for `berth build`,
//! calling the entry points in the order the real binary must.
//!
//! `berth-sandbox-selftest [--enter] [--single-id] run`     RunSpec JSON on stdin
//! `berth-sandbox-selftest [--enter] [--single-id] overlay` OverlayRequest JSON on stdin
//!
//! Prints one JSON report on stdout.

use std::io::Read;
use std::path::PathBuf;

use berth_sandbox::{IdMapping, NamespaceOptions, OutputStream, RunSpec};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct OverlayRequest {
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    target: PathBuf,
    legacy: bool,
    /// Removed through the overlay (leaves a whiteout in upper).
    remove: Option<String>,
    /// Created through the overlay.
    create: Option<String>,
}

fn main() {
    berth_sandbox::helper_main_if_requested();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let enter = args.iter().any(|a| a == "--enter");
    let single = args.iter().any(|a| a == "--single-id");
    let cmd = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_default();

    let info = if enter {
        let opts = NamespaceOptions {
            id_mapping: if single {
                IdMapping::Single
            } else {
                IdMapping::Auto
            },
        };
        match berth_sandbox::enter_build_namespace_with(&opts) {
            Ok(info) => Some(info),
            Err(e) => {
                println!("{}", json!({ "error": e.to_string() }));
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).expect("stdin");

    let report = match cmd.as_str() {
        "run" => {
            let spec: RunSpec = serde_json::from_slice(&input).expect("RunSpec JSON");
            // Like the builder: run() from a thread other than main.
            let handle = std::thread::spawn(move || {
                let (mut out, mut err, mut chunks) = (Vec::new(), Vec::new(), 0);
                let res = berth_sandbox::run(&spec, &mut |s, b| {
                    chunks += 1;
                    match s {
                        OutputStream::Stdout => out.extend_from_slice(b),
                        OutputStream::Stderr => err.extend_from_slice(b),
                    }
                });
                (res, out, err)
            });
            let (res, out, err) = handle.join().expect("run thread");
            let (code, signal, error) = match res {
                Ok(st) => (
                    st.code(),
                    std::os::unix::process::ExitStatusExt::signal(&st),
                    None,
                ),
                Err(e) => (None, None, Some(e.to_string())),
            };
            json!({
                "info": info,
                "code": code,
                "signal": signal,
                "error": error,
                "stdout": String::from_utf8_lossy(&out),
                "stderr": String::from_utf8_lossy(&err),
            })
        }
        "overlay" => {
            let req: OverlayRequest = serde_json::from_slice(&input).expect("OverlayRequest JSON");
            overlay(req, info)
        }
        _ => {
            eprintln!(
                "usage: berth-sandbox-selftest [--enter] [--single-id] run|overlay < request.json"
            );
            std::process::exit(2);
        }
    };
    println!("{report}");
}

fn overlay(req: OverlayRequest, info: Option<berth_sandbox::NamespaceInfo>) -> serde_json::Value {
    let mounted = if req.legacy {
        berth_sandbox::testing::mount_overlay_legacy(
            &req.lowers,
            &req.upper,
            &req.work,
            &req.target,
        )
        .map(|()| None)
    } else {
        berth_sandbox::mount_overlay(&req.lowers, &req.upper, &req.work, &req.target).map(Some)
    };
    let guard = match mounted {
        Ok(g) => g,
        Err(e) => return json!({ "info": info, "error": e.to_string() }),
    };
    let mut listing: Vec<String> = std::fs::read_dir(&req.target)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    listing.sort();
    if let Some(r) = &req.remove {
        std::fs::remove_file(req.target.join(r)).expect("remove through overlay");
    }
    if let Some(c) = &req.create {
        std::fs::write(req.target.join(c), b"created through overlay")
            .expect("create through overlay");
    }
    let unmounted = match guard {
        Some(g) => g.unmount().map_err(|e| e.to_string()),
        None => nix_umount(&req.target),
    };
    let after: Vec<String> = std::fs::read_dir(&req.target)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    json!({ "info": info, "listing": listing, "unmounted": unmounted.err(), "after_unmount": after })
}

fn nix_umount(target: &std::path::Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: valid path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
