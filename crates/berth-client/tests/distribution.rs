//! The client against Debian's distribution (`docker-registry`) with
//! htpasswd (Basic) authentication: anonymous access, credentials from a
//! Docker config's `auths`, from a `credHelpers` helper, and a wrong
//! password.
//!
//! One test that runs its steps in order: it sets `DOCKER_CONFIG` and
//! `PATH` once, before any other thread exists, so nothing races on the
//! environment.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::{ClientConfig, Credential, DockerConfig, Error, RegistryClient};
use common::{collect, TestImage};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

struct Distribution {
    child: Child,
    port: u16,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn start_distribution(dir: &Path) -> Distribution {
    let out = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils) must be installed");
    assert!(out.status.success(), "htpasswd failed: {out:?}");
    std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
    let port = free_port();
    let config = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n\
         auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n",
        data = dir.join("data").display(),
        htpasswd = dir.join("htpasswd").display(),
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start docker-registry");
    let mut d = Distribution { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = d.child.try_wait().unwrap() {
            panic!("docker-registry exited early: {status}");
        }
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    d.port = port;
    d
}

fn write_helper(dir: &Path, server: &str) -> PathBuf {
    let script = format!(
        r#"#!/bin/sh
# Test credential helper: knows alice's password for {server} only; records
# what it is asked to store and erase.
dir=$(dirname "$0")
IFS= read -r input || true
case "$1" in
get)
    if [ "$input" = "{server}" ]; then
        printf '{{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}}\n' "$input"
    else
        echo "credentials not found in native keychain"
        exit 1
    fi ;;
store) printf '%s' "$input" > "$dir/stored.json" ;;
erase) printf '%s' "$input" > "$dir/erased" ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
"#
    );
    let path = dir.join("docker-credential-berthtest");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn basic(password: &str) -> Credential {
    Credential::Basic {
        username: "alice".into(),
        password: password.into(),
    }
}

fn client(registry: &str, credential: Option<Credential>) -> RegistryClient {
    RegistryClient::new(
        registry,
        ClientConfig {
            credential,
            ..common::config()
        },
    )
    .unwrap()
}

#[test]
fn htpasswd_registry() {
    if !Path::new(REGISTRY_BIN).exists() {
        println!("skipped: {REGISTRY_BIN} is not installed (Debian package docker-registry)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docker_config = tmp.path().join("docker");
    let helper_dir = tmp.path().join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let dist = start_distribution(tmp.path());
    let registry = format!("127.0.0.1:{}", dist.port);
    write_helper(&helper_dir, &registry);
    // Set once, before the runtime's threads exist.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![helper_dir.clone()];
    paths.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
    std::env::set_var("DOCKER_CONFIG", &docker_config);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let img = TestImage::new(7, 300_000);

        // Anonymous: a clear "log in" error, for reads and pushes alike.
        let anon = client(&registry, None);
        let e = anon.ping().await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        assert!(
            msg.contains("authentication required")
                && msg.contains(&format!("berth login {registry}")),
            "{msg}"
        );
        let e = img.push(&anon, "team/app", "v1").await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        assert!(e.to_string().contains("repository team/app"), "{e}");

        // Credentials stored in $DOCKER_CONFIG's `auths` (as `berth login`
        // will), read back through the environment.
        let mut cfg = DockerConfig::load().unwrap();
        assert_eq!(cfg.path(), docker_config.join("config.json"));
        cfg.store(&registry, &basic("s3cret")).unwrap();
        let config = ClientConfig::from_docker_config(&registry).unwrap();
        assert_eq!(config.credential, Some(basic("s3cret")));
        let c = RegistryClient::new(&registry, config).unwrap();
        c.ping().await.unwrap();
        let digest = img.push(&c, "team/app", "v1").await.unwrap();
        for t in ["v2", "v3"] {
            c.put_manifest("team/app", t, common::OCI_MANIFEST, img.manifest.clone())
                .await
                .unwrap();
        }
        let m = c.get_manifest("team/app", "v1", &[]).await.unwrap();
        assert_eq!(
            (m.bytes, m.digest.clone()),
            (img.manifest.clone(), digest.clone())
        );
        let blob = c
            .get_blob(
                "team/app",
                &img.layer_digest(),
                Some(img.layer.len() as u64),
                0,
            )
            .await
            .unwrap();
        assert_eq!(collect(blob).await.unwrap(), img.layer);
        let blob = c
            .get_blob(
                "team/app",
                &img.layer_digest(),
                Some(img.layer.len() as u64),
                123_457,
            )
            .await
            .unwrap();
        assert_eq!(collect(blob).await.unwrap(), &img.layer[123_457..]);
        assert_eq!(
            c.list_tags("team/app", Some(2)).await.unwrap(),
            ["v1", "v2", "v3"]
        );
        assert!(c
            .mount_blob("team/copy", "team/app", &img.layer_digest())
            .await
            .unwrap());
        // One repository per page: the Link header is followed.
        assert_eq!(c.catalog(Some(1)).await.unwrap(), ["team/app", "team/copy"]);
        c.delete_manifest("team/app", &digest.to_string())
            .await
            .unwrap();
        assert_eq!(c.head_manifest("team/app", "v1", &[]).await.unwrap(), None);
        img.push(&c, "team/app", "v1").await.unwrap();

        // Credentials from a `credHelpers` helper on PATH.
        let helper_config = helper_dir.join("config.json");
        std::fs::write(
            &helper_config,
            format!(r#"{{"credHelpers": {{"{registry}": "berthtest"}}, "auths": {{}}}}"#),
        )
        .unwrap();
        let mut hc = DockerConfig::load_from(&helper_config).unwrap();
        assert_eq!(hc.get(&registry).unwrap(), Some(basic("s3cret")));
        assert_eq!(hc.get("127.0.0.1:1").unwrap(), None);
        let c = client(&registry, hc.get(&registry).unwrap());
        let m = c.get_manifest("team/app", "v1", &[]).await.unwrap();
        assert_eq!(m.bytes, img.manifest);
        // store/erase go through the helper; the file keeps an empty entry.
        hc.store(&registry, &basic("new")).unwrap();
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(helper_dir.join("stored.json")).unwrap())
                .unwrap();
        assert_eq!(stored["ServerURL"], registry.as_str());
        assert_eq!(stored["Username"], "alice");
        assert_eq!(stored["Secret"], "new");
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&helper_config).unwrap()).unwrap();
        assert_eq!(file["auths"][&registry], serde_json::json!({}));
        assert_eq!(file["credHelpers"][&registry], "berthtest");
        assert!(hc.erase(&registry).unwrap());
        assert_eq!(
            std::fs::read_to_string(helper_dir.join("erased")).unwrap(),
            registry
        );

        // A wrong password: a clear error naming the user.
        let bad = client(&registry, Some(basic("wrong")));
        for e in [
            bad.ping().await.unwrap_err(),
            bad.get_manifest("team/app", "v1", &[]).await.unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
            assert!(
                msg.contains("refused the credentials of user \"alice\"")
                    && msg.contains(&format!("berth login {registry}")),
                "{msg}"
            );
        }
    });
}
