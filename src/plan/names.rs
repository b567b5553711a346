//! Deterministic AWS names and ownership tags.
//!
//! A name is `kappa-<cluster>-<namespace>-<name>-<role>-<hash>`: readable, and unique because the hash
//! covers the exact (cluster, namespace, name, role) tuple, so `a-b/c` and `a/b-c` never collide. When a
//! name would exceed the service's limit, the readable part is cut and the hash keeps it unique and
//! stable. Every resource carries tags naming its owner (cluster, namespace, kind, name and the object's
//! uid); the operator changes or deletes only what carries its owner's tags ([`Owner::ownership`]).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Tag keys written on every AWS resource the operator creates.
pub mod tag_keys {
    pub const MANAGED_BY: &str = "kappa.dev/managed-by";
    pub const CLUSTER: &str = "kappa.dev/cluster";
    pub const NAMESPACE: &str = "kappa.dev/namespace";
    pub const KIND: &str = "kappa.dev/kind";
    pub const NAME: &str = "kappa.dev/name";
    /// The Kubernetes uid of the owning object: names alone cannot tell a re-created object (or a
    /// re-created namespace, given to someone else) from the one that created the resource.
    pub const UID: &str = "kappa.dev/uid";
    /// On a table the operator adopted (never created): who adopted it, as
    /// `<cluster>/<namespace>/<kind>/<name>/<uid>`. Such a table is never deleted, and no other object may
    /// adopt it while the tag is there.
    pub const ADOPTED_BY: &str = "kappa.dev/adopted-by";

    /// Every key above: a resource carrying none of them is not kappa's.
    pub const ALL: [&str; 7] = [MANAGED_BY, CLUSTER, NAMESPACE, KIND, NAME, UID, ADOPTED_BY];
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
    /// The Kubernetes object's uid (`metadata.uid`), written as `kappa.dev/uid`. `None` for owners that
    /// are no single object (a namespace's shared views table) and in pure tests.
    pub uid: Option<String>,
}

/// Who a resource belongs to, by the tags found on it (see [`Owner::ownership`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by this owner: the operator may update and delete it.
    Ours,
    /// An existing resource this owner adopted (`kappa.dev/adopted-by` names it): used, never deleted.
    AdoptedByUs,
    /// No kappa tag at all: created by someone else than the operator. Only an administrator may let the
    /// operator adopt it.
    Unclaimed,
    /// Another owner's (or another object's of the same name, with another uid): the operator must not
    /// tag, update, adopt or delete it. The text describes that owner.
    Other(String),
}

impl Owner {
    pub fn new(cluster: &str, namespace: &str, kind: &str, name: &str) -> Self {
        Owner {
            cluster: cluster.into(),
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
            uid: None,
        }
    }

    /// This owner, identified also by the object's uid (an empty uid counts as none).
    pub fn with_uid(mut self, uid: Option<&str>) -> Self {
        self.uid = uid.filter(|u| !u.is_empty()).map(str::to_string);
        self
    }

    /// The ownership tags; deletion matches all of them.
    pub fn tags(&self) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::from([
            (tag_keys::MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (tag_keys::CLUSTER.to_string(), self.cluster.clone()),
            (tag_keys::NAMESPACE.to_string(), self.namespace.clone()),
            (tag_keys::KIND.to_string(), self.kind.clone()),
            (tag_keys::NAME.to_string(), self.name.clone()),
        ]);
        if let Some(uid) = &self.uid {
            tags.insert(tag_keys::UID.to_string(), uid.clone());
        }
        tags
    }

    /// The owner that planned `tags` (its [`Owner::tags`]), or `None` when they are not ownership tags.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Owner> {
        let get = |k: &str| tags.get(k).map(String::as_str);
        Some(
            Owner::new(
                get(tag_keys::CLUSTER)?,
                get(tag_keys::NAMESPACE)?,
                get(tag_keys::KIND)?,
                get(tag_keys::NAME)?,
            )
            .with_uid(get(tag_keys::UID)),
        )
    }

    /// The value of `kappa.dev/adopted-by` this owner writes on a table it adopts:
    /// `<cluster>/<namespace>/<kind>/<name>/<uid>`, the name cut so the value fits the 256 characters of
    /// an AWS tag value (the uid is what identifies the owner; the name is for people).
    pub fn adopter_id(&self) -> String {
        const MAX_TAG_VALUE: usize = 256;
        let uid = self.uid.as_deref().unwrap_or("-");
        let fixed = self.cluster.len() + self.namespace.len() + self.kind.len() + uid.len() + 4;
        let name: String = self
            .name
            .chars()
            .take(MAX_TAG_VALUE.saturating_sub(fixed))
            .collect();
        format!("{}/{}/{}/{name}/{uid}", self.cluster, self.namespace, self.kind)
    }

    /// Whom `tags` (as found on an AWS resource) say it belongs to, from this owner's point of view.
    ///
    /// Cluster, namespace, kind and name must all match, and the uid too when both sides have one. A
    /// resource with matching names but no uid tag was created by an operator version before uid tags
    /// and counts as ours (the next reconcile writes the uid); one with another uid belongs to an earlier
    /// object of the same name, which is another owner.
    pub fn ownership(&self, tags: &BTreeMap<String, String>) -> Ownership {
        if !tag_keys::ALL.iter().any(|k| tags.contains_key(*k)) {
            return Ownership::Unclaimed;
        }
        if let Some(adopter) = tags.get(tag_keys::ADOPTED_BY) {
            return if *adopter == self.adopter_id() {
                Ownership::AdoptedByUs
            } else {
                Ownership::Other(format!("adopted by {}", describe_adopter(adopter)))
            };
        }
        let get = |k: &str| tags.get(k).map(String::as_str);
        let names_match = get(tag_keys::MANAGED_BY) == Some(MANAGED_BY)
            && get(tag_keys::CLUSTER) == Some(self.cluster.as_str())
            && get(tag_keys::NAMESPACE) == Some(self.namespace.as_str())
            && get(tag_keys::KIND) == Some(self.kind.as_str())
            && get(tag_keys::NAME) == Some(self.name.as_str());
        let uid_matches = match (get(tag_keys::UID), self.uid.as_deref()) {
            (Some(theirs), Some(ours)) => theirs == ours,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if names_match && uid_matches {
            return Ownership::Ours;
        }
        Ownership::Other(describe_tags(tags))
    }

    /// The uid of the earlier object of this owner's cluster, namespace, kind and name that `tags` (as
    /// found on an AWS resource) say created it: an object deleted and created again under the same name,
    /// whose resource was retained. `None` when the tags name another owner, no uid, or this owner.
    pub fn predecessor_uid(&self, tags: &BTreeMap<String, String>) -> Option<String> {
        let get = |k: &str| tags.get(k).map(String::as_str);
        let names_match = !tags.contains_key(tag_keys::ADOPTED_BY)
            && get(tag_keys::MANAGED_BY) == Some(MANAGED_BY)
            && get(tag_keys::CLUSTER) == Some(self.cluster.as_str())
            && get(tag_keys::NAMESPACE) == Some(self.namespace.as_str())
            && get(tag_keys::KIND) == Some(self.kind.as_str())
            && get(tag_keys::NAME) == Some(self.name.as_str());
        match (get(tag_keys::UID), self.uid.as_deref()) {
            (Some(theirs), Some(ours)) if names_match && theirs != ours => Some(theirs.to_string()),
            _ => None,
        }
    }

    /// Whether `tags` (as found on an AWS resource) say this owner created it: see [`Owner::ownership`].
    pub fn owns(&self, tags: &BTreeMap<String, String>) -> bool {
        self.ownership(tags) == Ownership::Ours
    }

    /// The name of this owner's resource in `role` (`log`, `writer`, `router`, `projector`, ...).
    pub fn resource_name(&self, role: &str, kind: NameKind) -> String {
        resource_name(&self.cluster, &self.namespace, &self.name, role, kind)
    }
}

/// `<kind> <namespace>/<name> (uid <uid>) of cluster <cluster>`, from a resource's ownership tags.
fn describe_tags(tags: &BTreeMap<String, String>) -> String {
    let get = |k: &str| tags.get(k).map(String::as_str).unwrap_or("?");
    let uid = tags
        .get(tag_keys::UID)
        .map(|u| format!(" (uid {u})"))
        .unwrap_or_default();
    format!(
        "{} {}/{}{uid} of cluster {}",
        get(tag_keys::KIND),
        get(tag_keys::NAMESPACE),
        get(tag_keys::NAME),
        get(tag_keys::CLUSTER)
    )
}

/// `<kind> <namespace>/<name> (uid <uid>) of cluster <cluster>` from an `adopted-by` value.
fn describe_adopter(value: &str) -> String {
    match value.splitn(5, '/').collect::<Vec<_>>()[..] {
        [cluster, namespace, kind, name, uid] => {
            format!("{kind} {namespace}/{name} (uid {uid}) of cluster {cluster}")
        }
        _ => value.to_string(),
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
    fn a_predecessor_is_an_earlier_object_of_the_same_name_only() {
        let me = Owner::new("c", "ns", "MaterializedView", "v").with_uid(Some("new"));
        let earlier = Owner::new("c", "ns", "MaterializedView", "v").with_uid(Some("old"));
        assert_eq!(me.predecessor_uid(&earlier.tags()), Some("old".into()));
        assert_eq!(me.predecessor_uid(&me.tags()), None, "itself");
        let no_uid = Owner::new("c", "ns", "MaterializedView", "v");
        assert_eq!(
            me.predecessor_uid(&no_uid.tags()),
            None,
            "tags from before uids are its own"
        );
        for other in [
            Owner::new("c2", "ns", "MaterializedView", "v"),
            Owner::new("c", "ns2", "MaterializedView", "v"),
            Owner::new("c", "ns", "EventLog", "v"),
            Owner::new("c", "ns", "MaterializedView", "w"),
        ] {
            assert_eq!(me.predecessor_uid(&other.with_uid(Some("old")).tags()), None);
        }
        let mut adopted = earlier.tags();
        adopted.insert(tag_keys::ADOPTED_BY.into(), earlier.adopter_id());
        assert_eq!(
            me.predecessor_uid(&adopted),
            None,
            "an adopted table is never taken over"
        );
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

    #[test]
    fn another_namespace_or_uid_is_another_owner_and_untagged_is_unclaimed() {
        let a = Owner::new("prod", "tenant-a", "EventLog", "payroll").with_uid(Some("uid-a"));
        let tags = a.tags();
        assert_eq!(tags[tag_keys::UID], "uid-a");
        assert_eq!(a.ownership(&tags), Ownership::Ours);
        let b = Owner::new("prod", "tenant-b", "EventLog", "payroll").with_uid(Some("uid-b"));
        let Ownership::Other(who) = b.ownership(&tags) else {
            panic!("tenant-b must not own tenant-a's resource")
        };
        assert_eq!(who, "EventLog tenant-a/payroll (uid uid-a) of cluster prod");
        let recreated = Owner::new("prod", "tenant-a", "EventLog", "payroll").with_uid(Some("uid-2"));
        assert!(
            matches!(recreated.ownership(&tags), Ownership::Other(_)),
            "a re-created object of the same name is another owner"
        );
        let mut legacy = tags.clone();
        legacy.remove(tag_keys::UID);
        assert_eq!(
            recreated.ownership(&legacy),
            Ownership::Ours,
            "created before uid tags: claimed by its name"
        );
        let untagged = BTreeMap::from([("team".to_string(), "x".to_string())]);
        assert_eq!(a.ownership(&untagged), Ownership::Unclaimed);
        let adopted = BTreeMap::from([(tag_keys::ADOPTED_BY.to_string(), a.adopter_id())]);
        assert_eq!(a.ownership(&adopted), Ownership::AdoptedByUs);
        let long = Owner::new("prod-eu1", &"n".repeat(63), "EventLog", &"x".repeat(253))
            .with_uid(Some("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"));
        assert!(
            long.adopter_id().len() <= 256,
            "an AWS tag value holds 256 characters"
        );
        assert!(
            long.adopter_id()
                .ends_with("/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
        );
        assert!(!a.owns(&adopted), "an adopted resource is never ours to delete");
        assert_eq!(
            b.ownership(&adopted),
            Ownership::Other("adopted by EventLog tenant-a/payroll (uid uid-a) of cluster prod".into())
        );
    }
}
