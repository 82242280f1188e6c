//! OCI platforms as LLB carries them, normalized the way containerd's `platforms.Normalize`
//! does, so that an op built here carries the same platform bytes as one built by upstream.

use std::fmt;

/// An OCI platform: `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
    pub os_version: String,
    pub os_features: Vec<String>,
}

impl Platform {
    /// A normalized platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.to_string(),
            ..Platform::default()
        }
        .normalized()
    }

    /// The platform this process runs on (`linux/amd64` on x86_64).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, "")
    }

    /// Parses `os[/arch[/variant]]` (for example `linux/arm64`, `linux/arm/v7`).
    pub fn parse(spec: &str) -> Result<Platform, crate::Error> {
        let bad = |reason: &str| crate::Error::InvalidPlatform {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty component"));
        }
        let valid = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(bad("invalid character"));
        }
        match parts.as_slice() {
            [os] => {
                let host = Platform::host();
                Ok(Platform::new(os, &host.architecture, &host.variant))
            }
            [os, arch] => Ok(Platform::new(os, arch, "")),
            [os, arch, variant] => Ok(Platform::new(os, arch, variant)),
            _ => Err(bad("too many components")),
        }
    }

    /// Applies containerd's normalization: lower-case, canonical architecture names, and
    /// the default variant dropped or filled in as containerd does.
    pub fn normalized(mut self) -> Platform {
        self.os = self.os.to_ascii_lowercase();
        if self.os == "macos" {
            self.os = "darwin".into();
        }
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.to_ascii_lowercase();
        let (arch, variant) = match arch.as_str() {
            "i386" | "x86" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                let v = if variant == "v1" {
                    String::new()
                } else {
                    variant
                };
                ("amd64".to_string(), v)
            }
            "aarch64" | "arm64" => {
                let v = if variant == "8" || variant == "v8" || variant.is_empty() {
                    String::new()
                } else {
                    variant
                };
                ("arm64".to_string(), v)
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            _ => (arch, variant),
        };
        self.architecture = arch;
        self.variant = variant;
        self
    }

    pub(crate) fn to_pb(&self) -> proto::pb::Platform {
        proto::pb::Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(
            Platform::new("Linux", "x86_64", "").to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::new("linux", "aarch64", "v8").to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::new("linux", "armhf", "").to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::new("linux", "arm", "").to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::new("linux", "arm", "6").to_string(),
            "linux/arm/v6"
        );
        assert_eq!(Platform::new("linux", "i386", "").to_string(), "linux/386");
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            Platform::parse("linux/arm64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().variant, "v7");
        assert!(Platform::parse("linux//x").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("linux/am d64").is_err());
    }

    #[test]
    fn host_is_normalized() {
        let h = Platform::host();
        assert_eq!(h.clone().normalized(), h);
    }
}
