//! One external resource, one owner.
//!
//! Two managed resources (any namespace, either generation) with the same
//! external name and ProviderConfigs that point at the same external system
//! would both manage one external resource: their specs fight, and
//! deleting either deletes it for both. Every managed resource claims its
//! external name here; the oldest claimant (creation time, then UID) is
//! the owner, and the reconciler never creates, updates or deletes
//! anything for a later one until it is the only claimant left.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use k8s_openapi::jiff::Timestamp;

use super::config::ConfigKey;

/// One managed resource's claim on an external name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub uid: String,
    pub created: Option<Timestamp>,
    /// For messages: `Robot.iam.dummy.m.crossplane.io team-a/r1`.
    pub describe: String,
    /// The ProviderConfig it names, when that can be resolved.
    pub config: Option<ConfigKey>,
    /// Which watch (or list) reported it; a relist replaces its claims.
    pub source: String,
    /// It already manages the external resource (finalized and Ready):
    /// within one second of creation (timestamps have no finer grain), the
    /// established claimant keeps it.
    pub established: bool,
}

impl Claimant {
    /// Whether `self` claimed before `other`: older creation first, then
    /// the established one, then the UID, so that every process orders any
    /// two claimants the same way.
    pub fn precedes(&self, other: &Claimant) -> bool {
        let key = |c: &Claimant| {
            (
                c.created.is_none(),
                c.created,
                !c.established,
                c.uid.clone(),
            )
        };
        key(self) < key(other)
    }
}

/// An external name within the space of kinds that share names.
type Name = (&'static str, String);

/// The claims of every managed resource this process watches.
#[derive(Debug, Default)]
pub struct Claims {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<Name, Vec<Claimant>>,
    by_uid: HashMap<String, Name>,
    /// During a relist: the UIDs each relisting source has reported so far.
    relisting: HashMap<String, HashSet<String>>,
}

impl Claims {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records (or moves) `claimant`'s claim on `external_name`.
    pub fn claim(&self, space: &'static str, external_name: &str, claimant: Claimant) {
        let mut inner = self.write();
        if let Some(seen) = inner.relisting.get_mut(&claimant.source) {
            seen.insert(claimant.uid.clone());
        }
        inner.remove(&claimant.uid);
        let name = (space, external_name.to_owned());
        inner.by_uid.insert(claimant.uid.clone(), name.clone());
        inner.by_name.entry(name).or_default().push(claimant);
    }

    /// Drops the claim of the resource `uid` (it is gone).
    pub fn release(&self, uid: &str) {
        self.write().remove(uid);
    }

    /// A relist of `source` starts: claims it does not report again before
    /// [`end_relist`](Self::end_relist) are dropped then.
    pub fn begin_relist(&self, source: &str) {
        self.write()
            .relisting
            .insert(source.to_owned(), HashSet::new());
    }

    pub fn end_relist(&self, source: &str) {
        let mut inner = self.write();
        let Some(seen) = inner.relisting.remove(source) else {
            return;
        };
        let stale: Vec<String> = inner
            .by_name
            .values()
            .flatten()
            .filter(|c| c.source == source && !seen.contains(&c.uid))
            .map(|c| c.uid.clone())
            .collect();
        for uid in stale {
            inner.remove(&uid);
        }
    }

    /// Every claimant of `external_name` in `space` that precedes `me`.
    pub fn preceding(
        &self,
        space: &'static str,
        external_name: &str,
        me: &Claimant,
    ) -> Vec<Claimant> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Claimant> = inner
            .by_name
            .get(&(space, external_name.to_owned()))
            .into_iter()
            .flatten()
            .filter(|c| c.uid != me.uid && c.precedes(me))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            if a.precedes(b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        found
    }

    /// How many claims are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_uid
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn remove(&mut self, uid: &str) {
        if let Some(name) = self.by_uid.remove(uid)
            && let Some(list) = self.by_name.get_mut(&name)
        {
            list.retain(|c| c.uid != uid);
            if list.is_empty() {
                self.by_name.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(uid: &str, secs: i64, source: &str) -> Claimant {
        Claimant {
            uid: uid.into(),
            created: Some(Timestamp::from_second(secs).unwrap()),
            describe: format!("Robot {uid}"),
            config: None,
            source: source.into(),
            established: false,
        }
    }

    #[test]
    fn the_oldest_claimant_owns_the_name() {
        let claims = Claims::default();
        let old = claimant("b", 10, "legacy");
        let new = claimant("a", 20, "namespaced");
        claims.claim("robot", "r1", old.clone());
        claims.claim("robot", "r1", new.clone());
        claims.claim("robot", "r2", claimant("c", 5, "legacy"));
        assert_eq!(claims.preceding("robot", "r1", &new), vec![old.clone()]);
        assert!(claims.preceding("robot", "r1", &old).is_empty());
        // Another space is another namespace of names.
        assert!(claims.preceding("fake", "r1", &new).is_empty());
        // Same second: the established one, then the UID, decide, the same
        // way everywhere.
        let twin = claimant("a0", 10, "legacy");
        assert!(twin.precedes(&old) && !old.precedes(&twin));
        let established = Claimant {
            established: true,
            ..old.clone()
        };
        assert!(established.precedes(&twin) && !twin.precedes(&established));
        claims.release("b");
        assert!(claims.preceding("robot", "r1", &new).is_empty());
    }

    #[test]
    fn a_claim_moves_with_the_external_name() {
        let claims = Claims::default();
        claims.claim("robot", "r1", claimant("a", 1, "s"));
        claims.claim("robot", "r2", claimant("a", 1, "s"));
        let probe = claimant("z", 9, "s");
        assert!(claims.preceding("robot", "r1", &probe).is_empty());
        assert_eq!(claims.preceding("robot", "r2", &probe).len(), 1);
        assert_eq!(claims.len(), 1);
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_reports() {
        let claims = Claims::default();
        claims.claim("robot", "r1", claimant("a", 1, "legacy"));
        claims.claim("robot", "r1", claimant("b", 2, "legacy"));
        claims.claim("robot", "r1", claimant("c", 3, "namespaced"));
        claims.begin_relist("legacy");
        claims.claim("robot", "r1", claimant("b", 2, "legacy"));
        claims.end_relist("legacy");
        let probe = claimant("z", 9, "x");
        let left: Vec<String> = claims
            .preceding("robot", "r1", &probe)
            .into_iter()
            .map(|c| c.uid)
            .collect();
        assert_eq!(left, ["b", "c"]);
    }
}
