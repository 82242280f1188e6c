//! A reproducible busybox base image made from the host's `busybox-static` binary.
//!
//! The rootfs holds `/bin/busybox`, a symlink to it for every applet `busybox --list-full` names
//! (`bin/sh`, `usr/bin/env`, ...), `/etc/passwd` and `/etc/group` with root, nobody and an
//! unprivileged `user` (1000:1000, home `/home/user`), and the usual empty directories (`/tmp` is
//! 1777). Everything is root-owned except `/home/user`. The same binary always yields the same
//! layer, config and manifest digests.

use std::path::Path;
use std::process::Command;

use crate::image::{Image, ImageSettings, Layer};
use crate::layer::{LayerBuilder, Meta};
use crate::layout;
use crate::{Error, Result};

/// Where Debian's `busybox-static` package installs the binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// Install hint used when the binary is missing.
pub const INSTALL_HINT: &str = "apt-get install busybox-static";
/// `config.Env` of the image.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The reference name written to the OCI layout's `index.json`.
pub const DEFAULT_REF_NAME: &str = "latest";

/// Contents of `/etc/passwd`.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
user:x:1000:1000:Unprivileged User:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// Contents of `/etc/group`.
pub const GROUP: &str = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n";

/// The busybox image plus the applet list it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyboxImage {
    image: Image,
    applets: Vec<String>,
}

impl BusyboxImage {
    /// Builds the image from [`DEFAULT_BUSYBOX`] and writes it to `dir` as an OCI image layout
    /// (tagged [`DEFAULT_REF_NAME`]). `dir` is created if needed.
    pub fn build(dir: &Path) -> Result<Self> {
        let image = Self::from_binary(Path::new(DEFAULT_BUSYBOX))?;
        layout::write(dir, image.image(), DEFAULT_REF_NAME)?;
        Ok(image)
    }

    /// Builds the image in memory from [`DEFAULT_BUSYBOX`].
    pub fn new() -> Result<Self> {
        Self::from_binary(Path::new(DEFAULT_BUSYBOX))
    }

    /// Builds the image in memory from a statically linked busybox at `busybox`.
    pub fn from_binary(busybox: &Path) -> Result<Self> {
        if !busybox.exists() {
            return Err(Error::ToolMissing {
                tool: busybox.to_path_buf(),
                hint: INSTALL_HINT,
            });
        }
        let binary =
            std::fs::read(busybox).map_err(Error::io(format!("read {}", busybox.display())))?;
        let applets = list_applets(busybox)?;
        let layer = rootfs(binary, &applets)?.finish()?;
        let settings = ImageSettings {
            env: vec![PATH_ENV.to_owned()],
            cmd: vec!["sh".to_owned()],
            working_dir: None,
            user: None,
            history: vec![format!(
                "testkit: busybox-static rootfs ({} applets)",
                applets.len()
            )],
        };
        let image = Image::assemble(vec![Layer::from_bytes(layer)], &settings)?;
        Ok(BusyboxImage { image, applets })
    }

    /// The assembled image (manifest, config and layer blobs).
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The single layer.
    pub fn layer(&self) -> &Layer {
        // `from_binary` always assembles exactly one layer.
        &self.image.layers()[0]
    }

    /// `sha256:...` of the manifest.
    pub fn manifest_digest(&self) -> &str {
        self.image.manifest().digest()
    }

    /// `sha256:...` of the config.
    pub fn config_digest(&self) -> &str {
        self.image.config().digest()
    }

    /// `sha256:...` of the compressed layer blob.
    pub fn layer_digest(&self) -> &str {
        self.layer().blob().digest()
    }

    /// `sha256:...` of the uncompressed layer tar.
    pub fn diff_id(&self) -> &str {
        self.layer().diff_id()
    }

    /// Applet paths linked to `/bin/busybox`, relative to `/`, sorted.
    pub fn applets(&self) -> &[String] {
        &self.applets
    }
}

/// Runs `busybox --list-full` and returns the sorted, de-duplicated applet paths, leaving out
/// `bin/busybox` itself.
pub fn list_applets(busybox: &Path) -> Result<Vec<String>> {
    let what = format!("{} --list-full", busybox.display());
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(Error::io(format!("run {what}")))?;
    if !out.status.success() {
        return Err(Error::Io {
            context: format!("run {what}"),
            source: std::io::Error::other(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut applets: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
        .map(str::to_owned)
        .collect();
    applets.sort();
    applets.dedup();
    if !applets.iter().any(|a| a == "bin/sh") {
        return Err(Error::Invalid {
            what: "busybox binary",
            value: busybox.display().to_string(),
            reason: "`--list-full` does not list bin/sh; is it a full busybox build?".into(),
        });
    }
    Ok(applets)
}

/// The rootfs described in the module docs.
fn rootfs(binary: Vec<u8>, applets: &[String]) -> Result<LayerBuilder> {
    let mut b = LayerBuilder::new();
    for dir in [
        "bin", "dev", "etc", "home", "proc", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var",
    ] {
        b.dir(dir, Meta::root(0o755))?;
    }
    b.dir("root", Meta::root(0o700))?;
    b.dir("tmp", Meta::root(0o1777))?;
    b.dir("home/user", Meta::root(0o755).owned_by(1000, 1000))?;
    b.file("bin/busybox", binary, Meta::root(0o755))?;
    b.file("etc/passwd", PASSWD, Meta::root(0o644))?;
    b.file("etc/group", GROUP, Meta::root(0o644))?;
    for applet in applets {
        b.symlink(applet, "/bin/busybox", Meta::root(0o777))?;
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// Unit tests need the apt binary; `require_tool` skips locally and fails in CI.
    fn have_busybox() -> bool {
        crate::require_tool(Path::new(DEFAULT_BUSYBOX), INSTALL_HINT).unwrap()
    }

    #[test]
    fn building_twice_gives_identical_digests() {
        if !have_busybox() {
            return;
        }
        let a = BusyboxImage::new().unwrap();
        let b = BusyboxImage::new().unwrap();
        assert_eq!(a.manifest_digest(), b.manifest_digest());
        assert_eq!(a.config_digest(), b.config_digest());
        assert_eq!(a.layer_digest(), b.layer_digest());
        assert_eq!(a.diff_id(), b.diff_id());
        assert_eq!(a, b);
    }

    #[test]
    fn rootfs_has_shell_users_and_tmp() {
        if !have_busybox() {
            return;
        }
        let img = BusyboxImage::new().unwrap();
        assert!(img.applets().iter().any(|a| a == "usr/bin/env"));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(img.layer().blob().bytes())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(crate::sha256_digest(&tar), img.diff_id());
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let h = entry.header().clone();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let mut body = String::new();
            if path.starts_with("etc/") {
                entry.read_to_string(&mut body).unwrap();
            }
            seen.insert(path, (h.mode().unwrap(), h.uid().unwrap(), link, body));
        }
        assert_eq!(seen["tmp/"].0, 0o1777);
        assert_eq!(seen["home/user/"].1, 1000);
        assert_eq!(seen["bin/busybox"].0, 0o755);
        assert_eq!(seen["bin/sh"].2.as_deref(), Some("/bin/busybox"));
        assert!(seen["etc/passwd"].3.contains("user:x:1000:1000:"));
        assert!(seen["etc/passwd"].3.contains("nobody:x:65534:65534:"));
        assert!(seen["etc/group"].3.contains("nogroup:x:65534:"));
    }

    #[test]
    fn missing_binary_names_the_package() {
        let err = BusyboxImage::from_binary(Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install busybox-static"),
            "{err}"
        );
    }
}
