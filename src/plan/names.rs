//! Deterministic AWS names and ownership tags.
//!
//! A name is `kappa-<cluster>-<namespace>-<name>-<role>-<hash>`: readable, and unique because the hash
//! covers the exact (cluster, namespace, name, role) tuple, so `a-b/c` and `a/b-c` never collide. When a
//! name would exceed the service's limit, the readable part is cut and the hash keeps it unique and
//! stable. Every resource carries tags naming its owner; deletion only touches what carries them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Tag keys written on every AWS resource the operator creates.
pub mod tag_keys {
    pub const MANAGED_BY: &str = "kappa.dev/managed-by";
    pub const CLUSTER: &str = "kappa.dev/cluster";
    pub const NAMESPACE: &str = "kappa.dev/namespace";
    pub const KIND: &str = "kappa.dev/kind";
    pub const NAME: &str = "kappa.dev/name";
}

/// The value of `kappa.dev/managed-by`.
pub const MANAGED_BY: &str = "kappa-operator";

/// Every name starts with this, so the operator's IAM policy can be scoped to `kappa-*`.
pub const NAME_PREFIX: &str = "kappa";

/// Length limits of the names AWS accepts, per kind of resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// DynamoDB table: 3 to 255 of `[A-Za-z0-9_.-]`.
    Table,
    /// Lambda function: at most 64 of `[A-Za-z0-9_-]`.
    Function,
    /// IAM role: at most 64 of `[A-Za-z0-9+=,.@_-]`.
    Role,
    /// SNS topic: at most 256 of `[A-Za-z0-9_-]`.
    Topic,
    /// SQS queue: at most 80 of `[A-Za-z0-9_-]`; a FIFO queue's name ends in `.fifo` (within the 80).
    Queue { fifo: bool },
}

impl NameKind {
    fn max_len(self) -> usize {
        match self {
            NameKind::Table => 255,
            NameKind::Function | NameKind::Role => 64,
            NameKind::Topic => 256,
            NameKind::Queue { fifo: true } => 80 - ".fifo".len(),
            NameKind::Queue { fifo: false } => 80,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            NameKind::Queue { fifo: true } => ".fifo",
            _ => "",
        }
    }
}

/// Who owns a resource: the Kubernetes object it was created for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub cluster: String,
    pub namespace: String,
    /// `EventLog` or `MaterializedView`, or `Namespace` for resources shared by a namespace's views.
    pub kind: String,
    pub name: String,
}

impl Owner {
    pub fn new(cluster: &str, namespace: &str, kind: &str, name: &str) -> Self {
        Owner {
            cluster: cluster.into(),
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// The ownership tags; deletion matches all of them.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (tag_keys::MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (tag_keys::CLUSTER.to_string(), self.cluster.clone()),
            (tag_keys::NAMESPACE.to_string(), self.namespace.clone()),
            (tag_keys::KIND.to_string(), self.kind.clone()),
            (tag_keys::NAME.to_string(), self.name.clone()),
        ])
    }

    /// Whether `tags` (as found on an AWS resource) say this owner created it.
    pub fn owns(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags().iter().all(|(k, v)| tags.get(k) == Some(v))
    }

    /// The name of this owner's resource in `role` (`log`, `writer`, `router`, `projector`, ...).
    pub fn resource_name(&self, role: &str, kind: NameKind) -> String {
        resource_name(&self.cluster, &self.namespace, &self.name, role, kind)
    }
}

/// `kappa-<cluster>-<namespace>-<name>-<role>-<hash8>`, cut to the kind's limit; see the module docs.
pub fn resource_name(cluster: &str, namespace: &str, name: &str, role: &str, kind: NameKind) -> String {
    let hash = short_hash(&[cluster, namespace, name, role]);
    let readable = sanitize(&format!("{NAME_PREFIX}-{cluster}-{namespace}-{name}-{role}"));
    let room = kind.max_len() - hash.len() - 1;
    let mut cut: String = readable.chars().take(room).collect();
    while cut.ends_with(['-', '.', '_']) {
        cut.pop();
    }
    format!("{cut}-{hash}{}", kind.suffix())
}

/// Characters outside `[A-Za-z0-9-]` (Kubernetes names may hold `.`) become `-`, accepted by every kind.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The first 8 hex digits of SHA-256 over the parts, each length-prefixed so boundaries count.
pub(crate) fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_deterministic() {
        let a = resource_name("prod", "games", "game-events", "log", NameKind::Table);
        assert!(a.starts_with("kappa-prod-games-game-events-log-"), "{a}");
        assert_eq!(
            a,
            resource_name("prod", "games", "game-events", "log", NameKind::Table)
        );
        assert_eq!(a.len(), "kappa-prod-games-game-events-log-".len() + 8);
    }

    #[test]
    fn boundaries_between_parts_do_not_collide() {
        let x = resource_name("c", "a-b", "c", "log", NameKind::Table);
        let y = resource_name("c", "a", "b-c", "log", NameKind::Table);
        assert_ne!(x, y);
        assert_ne!(
            resource_name("prod", "ns", "v", "projector", NameKind::Function),
            resource_name("stage", "ns", "v", "projector", NameKind::Function),
            "two clusters sharing an account never share a name"
        );
    }

    #[test]
    fn long_names_are_cut_to_the_limit_and_stay_unique() {
        let long = "x".repeat(200);
        for kind in [
            NameKind::Function,
            NameKind::Role,
            NameKind::Queue { fifo: true },
            NameKind::Table,
        ] {
            let a = resource_name(
                "prod",
                "namespace-with-a-long-name",
                &format!("{long}a"),
                "projector",
                kind,
            );
            let b = resource_name(
                "prod",
                "namespace-with-a-long-name",
                &format!("{long}b"),
                "projector",
                kind,
            );
            assert!(
                a.len() <= kind.max_len() + kind.suffix().len(),
                "{kind:?}: {a} is {} long",
                a.len()
            );
            assert_ne!(a, b, "{kind:?}: cut names must stay unique");
        }
        let f = resource_name("prod", "ns", &long, "projector", NameKind::Function);
        assert_eq!(f.len(), 64);
        assert!(f.starts_with("kappa-prod-ns-xxx"));
    }

    #[test]
    fn fifo_queues_end_in_dot_fifo() {
        let q = resource_name("prod", "ns", "log", "ingest", NameKind::Queue { fifo: true });
        assert!(q.ends_with(".fifo") && q.len() <= 80, "{q}");
    }

    #[test]
    fn dots_in_kubernetes_names_become_dashes() {
        let n = resource_name("prod", "ns", "my.view", "projector", NameKind::Function);
        assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{n}");
    }

    #[test]
    fn ownership_needs_every_tag() {
        let owner = Owner::new("prod", "ns", "MaterializedView", "players");
        let mut tags = owner.tags();
        assert!(owner.owns(&tags));
        tags.insert("other".into(), "x".into());
        assert!(owner.owns(&tags), "extra tags do not matter");
        tags.insert(tag_keys::NAMESPACE.into(), "other-ns".into());
        assert!(!owner.owns(&tags), "a sibling namespace's resource is not ours");
        assert!(!Owner::new("prod", "ns", "MaterializedView", "players").owns(&BTreeMap::new()));
    }
}
