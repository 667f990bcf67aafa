//! Which disks a request may name. The bus is a trust boundary (anyone who may publish to
//! snapq's topic can ask), so a request may only name an instance disk: a disk in one of the
//! allowed source pools whose name looks like one of Nova's. Glance's pool is never a source,
//! so no request can copy another tenant's image into its own.

use regex::Regex;
use snapq_common::message::DiskSpec;

use crate::error::Refusal;

/// Nova's instance disks: `<instance uuid>_disk`, and the same instance's ephemeral disks
/// `<uuid>_disk.local` and `<uuid>_disk.eph<N>` (`nova/virt/libvirt/imagebackend.py` names
/// them `<uuid>_<disk name>`).
pub const NOVA_DISK_NAME_PATTERN: &str =
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}_disk(\.local|\.eph[0-9]+)?$";

/// The policy's options, shared by `snapq-worker` and `snapq jobs purge`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Pools requests may name a disk in (comma-separated). Glance's pool is never allowed.
    #[arg(
        long,
        env = "SNAPQ_SOURCE_POOLS",
        default_value = "vms",
        value_delimiter = ','
    )]
    pub source_pools: Vec<String>,
    /// Regular expression a requested disk's whole name must match (default: Nova's
    /// `<uuid>_disk`, `<uuid>_disk.local`, `<uuid>_disk.eph<N>`).
    #[arg(long, env = "SNAPQ_DISK_NAME_PATTERN", default_value = NOVA_DISK_NAME_PATTERN)]
    pub disk_name_pattern: String,
}

impl PolicyArgs {
    /// The policy these options make, in a cluster where Glance's pool is `glance_pool`.
    pub fn policy(&self, glance_pool: &str) -> Result<SourcePolicy, PolicyError> {
        SourcePolicy::new(&self.source_pools, &self.disk_name_pattern, glance_pool)
    }
}

/// The allowed source pools and disk names, validated once at start.
#[derive(Debug, Clone)]
pub struct SourcePolicy {
    pools: Vec<String>,
    names: Regex,
    glance_pool: String,
}

/// A policy that cannot be used, naming the option.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("--source-pools: at least one pool is needed")]
    NoPools,
    #[error("--source-pools: '{0}' is Glance's pool, which must never be a source")]
    GlancePool(String),
    #[error("--source-pools: '{0}' is not a valid pool name: {1}")]
    BadPool(String, String),
    #[error("--disk-name-pattern: {0}")]
    BadPattern(#[from] regex::Error),
}

impl SourcePolicy {
    /// `pools` (comma-separated in the options) and `pattern`, a regular expression the whole
    /// disk name must match: it is anchored here (`^(?:pattern)$`), so `.*_disk` cannot match
    /// `x_disk_backup` by a substring.
    pub fn new(
        pools: &[String],
        pattern: &str,
        glance_pool: &str,
    ) -> Result<SourcePolicy, PolicyError> {
        let pools: Vec<String> = pools
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if pools.is_empty() {
            return Err(PolicyError::NoPools);
        }
        for pool in &pools {
            if pool == glance_pool {
                return Err(PolicyError::GlancePool(pool.clone()));
            }
            snapq_common::message::validate_pool_name("--source-pools", pool)
                .map_err(|e| PolicyError::BadPool(pool.clone(), e.to_string()))?;
        }
        Ok(SourcePolicy {
            pools,
            names: Regex::new(&format!("^(?:{pattern})$"))?,
            glance_pool: glance_pool.to_string(),
        })
    }

    /// Nova's pool only, Nova's disk names.
    pub fn nova(nova_pool: &str, glance_pool: &str) -> Result<SourcePolicy, PolicyError> {
        SourcePolicy::new(
            &[nova_pool.to_string()],
            NOVA_DISK_NAME_PATTERN,
            glance_pool,
        )
    }

    /// Whether a request may name `disk` as its source.
    pub fn check(&self, disk: &DiskSpec) -> Result<(), Refusal> {
        if disk.pool == self.glance_pool {
            return Err(Refusal::GlancePool {
                pool: disk.pool.clone(),
            });
        }
        if !self.pools.contains(&disk.pool) {
            return Err(Refusal::PoolNotAllowed {
                pool: disk.pool.clone(),
                allowed: self.pools.join(", "),
            });
        }
        if !self.names.is_match(&disk.image) {
            return Err(Refusal::NameNotAllowed {
                name: disk.image.clone(),
                pattern: self.names.as_str().to_string(),
            });
        }
        Ok(())
    }

    pub fn pools(&self) -> &[String] {
        &self.pools
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(spec: &str) -> DiskSpec {
        DiskSpec::parse("args.disk", spec).expect("a valid disk spec")
    }

    #[test]
    fn nova_policy_allows_instance_disks_only() {
        let policy = SourcePolicy::nova("vms", "images").expect("valid policy");
        for ok in [
            "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk",
            "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk.local",
            "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk.eph0",
        ] {
            assert!(policy.check(&disk(ok)).is_ok(), "{ok}");
        }
        let refused = |spec: &str| policy.check(&disk(spec)).expect_err(spec);
        assert!(matches!(
            refused("images/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk"),
            Refusal::GlancePool { .. }
        ));
        assert!(matches!(
            refused("volumes/volume-6f1c2e0a-1111-4a2b-9c3d-000000000001"),
            Refusal::PoolNotAllowed { .. }
        ));
        for name in [
            "vms/volume-1234",
            "vms/6f1c2e0a-1111-4a2b-9c3d-000000000001_disk.swap",
            "vms/x6f1c2e0a-1111-4a2b-9c3d-000000000001_disk",
            "vms/6F1C2E0A-1111-4A2B-9C3D-000000000001_disk",
        ] {
            assert!(
                matches!(refused(name), Refusal::NameNotAllowed { .. }),
                "{name}"
            );
        }
        let message = refused("vms/volume-1234").to_string();
        assert!(message.starts_with("args.disk:"), "{message}");
    }

    #[test]
    fn glance_pool_cannot_be_made_a_source() {
        let err = SourcePolicy::new(&["vms".into(), "images".into()], ".*", "images")
            .expect_err("Glance's pool refused");
        assert!(err.to_string().contains("--source-pools"), "{err}");
        let err = SourcePolicy::new(&[], ".*", "images").expect_err("no pools");
        assert!(matches!(err, PolicyError::NoPools));
        let err = SourcePolicy::new(&["vms".into()], "(", "images").expect_err("bad regex");
        assert!(err.to_string().starts_with("--disk-name-pattern"), "{err}");
    }

    #[test]
    fn a_user_pattern_must_match_the_whole_name() {
        let policy =
            SourcePolicy::new(&["vms".into()], "[0-9a-f-]+_disk", "images").expect("valid policy");
        assert!(policy.check(&disk("vms/0a1b_disk")).is_ok());
        for name in [
            "vms/0a1b_disk_backup",
            "vms/secret-0a1b_disk",
            "vms/x/0a1b_disk",
        ] {
            let Ok(spec) = DiskSpec::parse("args.disk", name) else {
                continue;
            };
            assert!(
                matches!(policy.check(&spec), Err(Refusal::NameNotAllowed { .. })),
                "{name} must not match by a substring"
            );
        }
    }
}
