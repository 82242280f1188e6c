//! LLB capability names, spelled exactly as upstream does (including the canonical typo
//! `soruce.http.uidgid`). An op records the caps it needs in its metadata; a loader rejects
//! caps it does not know.

macro_rules! caps {
    ($($name:ident = $value:literal;)*) => {
        $(#[doc = concat!("`", $value, "`")] pub const $name: &str = $value;)*
        /// Every capability name this implementation knows.
        pub const KNOWN: &[&str] = &[$($value),*];
    };
}

caps! {
    SOURCE_IMAGE = "source.image";
    SOURCE_IMAGE_RESOLVE_MODE = "source.image.resolvemode";
    SOURCE_IMAGE_LAYER_LIMIT = "source.image.layerlimit";
    SOURCE_IMAGE_CHECKSUM = "source.image.checksum";
    SOURCE_LOCAL = "source.local";
    SOURCE_LOCAL_UNIQUE = "source.local.unique";
    SOURCE_LOCAL_SESSION_ID = "source.local.sessionid";
    SOURCE_LOCAL_INCLUDE_PATTERNS = "source.local.includepatterns";
    SOURCE_LOCAL_FOLLOW_PATHS = "source.local.followpaths";
    SOURCE_LOCAL_EXCLUDE_PATTERNS = "source.local.excludepatterns";
    SOURCE_LOCAL_SHARED_KEY_HINT = "source.local.sharedkeyhint";
    SOURCE_LOCAL_DIFFER = "source.local.differ";
    SOURCE_LOCAL_METADATA_TRANSFER = "source.local.metadatatransfer";
    SOURCE_GIT = "source.git";
    SOURCE_GIT_KEEP_DIR = "source.git.keepgitdir";
    SOURCE_GIT_FULL_URL = "source.git.fullurl";
    SOURCE_GIT_HTTP_AUTH = "source.git.httpauth";
    SOURCE_GIT_KNOWN_SSH_HOSTS = "source.git.knownsshhosts";
    SOURCE_GIT_MOUNT_SSH_SOCK = "source.git.mountsshsock";
    SOURCE_GIT_SUBDIR = "source.git.subdir";
    SOURCE_GIT_CHECKSUM = "source.git.checksum";
    SOURCE_GIT_SKIP_SUBMODULES = "source.git.skipsubmodules";
    SOURCE_GIT_SIGNATURE_VERIFY = "source.git.signatureverify";
    SOURCE_GIT_MTIME = "source.git.mtime";
    SOURCE_GIT_FETCH_BY_COMMIT = "source.git.fetchbycommit";
    SOURCE_GIT_BUNDLE = "source.git.bundle";
    SOURCE_GIT_CHECKOUT_BUNDLE = "source.git.checkoutbundle";
    SOURCE_HTTP = "source.http";
    SOURCE_HTTP_AUTH = "source.http.auth";
    SOURCE_HTTP_CHECKSUM = "source.http.checksum";
    SOURCE_HTTP_PERM = "source.http.perm";
    SOURCE_HTTP_UIDGID = "soruce.http.uidgid";
    SOURCE_HTTP_HEADER = "source.http.header";
    SOURCE_HTTP_SIGNATURE_VERIFY = "source.http.signatureverify";
    SOURCE_IMAGE_BLOB = "source.imageblob";
    SOURCE_OCI_LAYOUT = "source.ocilayout";
    SOURCE_BUILD_OP_LLB_FILENAME = "source.buildop.llbfilename";
    SOURCE_POLICY = "source.policy";
    SOURCE_POLICY_SESSION = "source.policy.session";
    EXEC_META_BASE = "exec.meta.base";
    EXEC_META_CGROUP_PARENT = "exec.meta.cgroup.parent";
    EXEC_META_NETWORK = "exec.meta.network";
    EXEC_META_NETWORK_PROXY = "exec.meta.network.proxy";
    EXEC_META_PROXY = "exec.meta.proxyenv";
    EXEC_META_SECURITY = "exec.meta.security";
    EXEC_META_SECURITY_DEVICES = "exec.meta.security.devices.v1";
    EXEC_META_SETS_DEFAULT_PATH = "exec.meta.setsdefaultpath";
    EXEC_META_ULIMIT = "exec.meta.ulimit";
    EXEC_META_CDI = "exec.meta.cdi";
    EXEC_META_REMOVE_MOUNT_STUBS_RECURSIVE = "exec.meta.removemountstubs.recursive";
    EXEC_META_LINUX_RESOURCES = "exec.meta.linux.resources";
    EXEC_MOUNT_BIND = "exec.mount.bind";
    EXEC_MOUNT_BIND_READWRITE_NO_OUTPUT = "exec.mount.bind.readwrite-nooutput";
    EXEC_MOUNT_CACHE = "exec.mount.cache";
    EXEC_MOUNT_CACHE_SHARING = "exec.mount.cache.sharing";
    EXEC_MOUNT_SELECTOR = "exec.mount.selector";
    EXEC_MOUNT_TMPFS = "exec.mount.tmpfs";
    EXEC_MOUNT_TMPFS_SIZE = "exec.mount.tmpfs.size";
    EXEC_MOUNT_SECRET = "exec.mount.secret";
    EXEC_MOUNT_SSH = "exec.mount.ssh";
    EXEC_MOUNT_CONTENT_CACHE = "exec.mount.cache.content";
    EXEC_CGROUPS_MOUNTED = "exec.cgroup";
    EXEC_SECRET_ENV = "exec.secretenv";
    EXEC_VALID_EXIT_CODE = "exec.validexitcode";
    FILE_BASE = "file.base";
    FILE_RM_WILDCARD = "file.rm.wildcard";
    FILE_COPY_INCLUDE_EXCLUDE_PATTERNS = "file.copy.includeexcludepatterns";
    FILE_COPY_REQUIRED_PATHS = "file.copy.requiredpaths";
    FILE_RM_NO_FOLLOW_SYMLINK = "file.rm.nofollowsymlink";
    FILE_COPY_ALWAYS_REPLACE_EXISTING_DEST_PATHS = "file.copy.alwaysreplaceexistingdestpaths";
    FILE_COPY_MODE_STRING = "file.copy.modestring";
    FILE_SYMLINK_CREATE = "file.symlink.create";
    CONSTRAINTS = "constraints";
    PLATFORM = "platform";
    META_IGNORE_CACHE = "meta.ignorecache";
    META_DESCRIPTION = "meta.description";
    META_EXPORT_CACHE = "meta.exportcache";
    REMOTE_CACHE_GHA = "cache.gha";
    REMOTE_CACHE_S3 = "cache.s3";
    REMOTE_CACHE_AZ_BLOB = "cache.azblob";
    MERGE_OP = "mergeop";
    DIFF_OP = "diffop";
    PASSTHROUGH_OP = "passthroughop";
}

/// Whether `cap` is a capability name this implementation knows.
pub fn is_known(cap: &str) -> bool {
    KNOWN.contains(&cap)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_keep_upstream_spelling() {
        let mut v = super::KNOWN.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), super::KNOWN.len());
        assert!(super::is_known("soruce.http.uidgid"));
        assert!(!super::is_known("source.http.uidgid"));
    }
}
