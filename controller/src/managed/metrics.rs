//! crossplane-runtime's managed-resource metrics, by the same names, label
//! and buckets, so existing Crossplane dashboards and alerts work:
//! `crossplane_managed_resource_{exists,ready,synced}` (gauges) and
//! `crossplane_managed_resource_{first_time_to_reconcile,first_time_to_readiness,deletion,drift}_seconds`
//! (histograms), each with the one label `gvk` (`group/version, Kind=Kind`).
//!
//! crossplane-runtime keys its per-resource timing by name alone, so two
//! namespaced resources of one name collide; here the key is the kind,
//! the namespace and the name.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::writer::ObjectKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GvkLabel {
    pub gvk: String,
}

/// The `gvk` label value: Go's `schema.GroupVersionKind.String()`.
pub fn gvk_label(group: &str, version: &str, kind: &str) -> String {
    format!("{group}/{version}, Kind={kind}")
}

/// crossplane-runtime's `ExponentialBuckets(10e-9, 10, 10)`.
fn fine_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1e-8, 10.0, 10)
}

/// crossplane-runtime's buckets for readiness and deletion.
const COARSE_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

type Key = (String, ObjectKey);

pub struct MrMetrics {
    exists: Family<GvkLabel, Gauge>,
    ready: Family<GvkLabel, Gauge>,
    synced: Family<GvkLabel, Gauge>,
    first_reconcile: Family<GvkLabel, Histogram>,
    first_ready: Family<GvkLabel, Histogram>,
    deletion: Family<GvkLabel, Histogram>,
    drift: Family<GvkLabel, Histogram>,
    /// Resources first seen unreconciled by this process: their first
    /// readiness is measured.
    first_seen: Mutex<HashSet<Key>>,
    /// When each resource was last observed in sync.
    last_in_sync: Mutex<HashMap<Key, Instant>>,
}

impl Default for MrMetrics {
    fn default() -> Self {
        Self {
            exists: Family::default(),
            ready: Family::default(),
            synced: Family::default(),
            first_reconcile: Family::new_with_constructor(|| Histogram::new(fine_buckets())),
            first_ready: Family::new_with_constructor(|| Histogram::new(COARSE_BUCKETS)),
            deletion: Family::new_with_constructor(|| Histogram::new(COARSE_BUCKETS)),
            drift: Family::new_with_constructor(|| Histogram::new(fine_buckets())),
            first_seen: Mutex::default(),
            last_in_sync: Mutex::default(),
        }
    }
}

fn since(t: Option<Timestamp>) -> Option<f64> {
    let t = t?;
    let d = Timestamp::now().duration_since(t);
    Some(d.as_secs_f64().max(0.0))
}

fn label(gvk: &str) -> GvkLabel {
    GvkLabel {
        gvk: gvk.to_owned(),
    }
}

impl MrMetrics {
    /// Registers the metrics, unprefixed, as crossplane-runtime names them.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "crossplane_managed_resource_exists",
            "The number of managed resources that exist",
            self.exists.clone(),
        );
        registry.register(
            "crossplane_managed_resource_ready",
            "The number of managed resources in Ready=True state",
            self.ready.clone(),
        );
        registry.register(
            "crossplane_managed_resource_synced",
            "The number of managed resources in Synced=True state",
            self.synced.clone(),
        );
        registry.register(
            "crossplane_managed_resource_first_time_to_reconcile_seconds",
            "The time it took for a managed resource to be detected by the controller",
            self.first_reconcile.clone(),
        );
        registry.register(
            "crossplane_managed_resource_first_time_to_readiness_seconds",
            "The time it took for a managed resource to become ready first time after creation",
            self.first_ready.clone(),
        );
        registry.register(
            "crossplane_managed_resource_deletion_seconds",
            "The time it took for a managed resource to be deleted",
            self.deletion.clone(),
        );
        registry.register(
            "crossplane_managed_resource_drift_seconds",
            "ALPHA: How long since the previous successful reconcile when a resource was found to be out of sync; excludes restart of the provider",
            self.drift.clone(),
        );
    }

    fn key(gvk: &str, key: &ObjectKey) -> Key {
        (gvk.to_owned(), key.clone())
    }

    /// A resource reconciled for the first time (no Synced condition yet).
    pub fn first_reconcile(&self, gvk: &str, key: &ObjectKey, created: Option<Timestamp>) {
        let mut seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(Self::key(gvk, key))
            && let Some(s) = since(created)
        {
            self.first_reconcile.get_or_create(&label(gvk)).observe(s);
        }
    }

    /// A resource became Ready; counted once, for those first seen here.
    pub fn became_ready(&self, gvk: &str, key: &ObjectKey, created: Option<Timestamp>) {
        let first = self
            .first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::key(gvk, key));
        if first && let Some(s) = since(created) {
            self.first_ready.get_or_create(&label(gvk)).observe(s);
        }
    }

    /// The external resource was observed matching the spec.
    pub fn in_sync(&self, gvk: &str, key: &ObjectKey) {
        self.last_in_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::key(gvk, key), Instant::now());
    }

    /// The external resource was found out of sync (an update is needed).
    pub fn drifted(&self, gvk: &str, key: &ObjectKey) {
        let last = self
            .last_in_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::key(gvk, key));
        if let Some(last) = last {
            self.drift
                .get_or_create(&label(gvk))
                .observe(last.elapsed().as_secs_f64());
        }
    }

    /// The resource's finalizer was removed: it is gone.
    pub fn deleted(&self, gvk: &str, key: &ObjectKey, deleted_at: Option<Timestamp>) {
        let k = Self::key(gvk, key);
        self.first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
        self.last_in_sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
        if let Some(s) = since(deleted_at) {
            self.deletion.get_or_create(&label(gvk)).observe(s);
        }
    }

    /// The state gauges of one kind, from its cache.
    pub fn set_state(&self, gvk: &str, exists: usize, ready: usize, synced: usize) {
        let l = label(gvk);
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.exists.get_or_create(&l).set(n(exists));
        self.ready.get_or_create(&l).set(n(ready));
        self.synced.get_or_create(&l).set(n(synced));
    }

    /// A kind is no longer served: its gauges go.
    pub fn forget_kind(&self, gvk: &str) {
        let l = label(gvk);
        self.exists.remove(&l);
        self.ready.remove(&l);
        self.synced.remove(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    fn encode(m: &MrMetrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn names_labels_and_buckets_are_crossplanes() {
        let m = MrMetrics::default();
        let gvk = gvk_label("iam.dummy.m.crossplane.io", "v1alpha1", "Robot");
        assert_eq!(gvk, "iam.dummy.m.crossplane.io/v1alpha1, Kind=Robot");
        let created = Some(Timestamp::now() - std::time::Duration::from_secs(2));
        m.first_reconcile(&gvk, &key("a", "r"), created);
        m.became_ready(&gvk, &key("a", "r"), created);
        m.set_state(&gvk, 3, 2, 1);
        let text = encode(&m);
        for name in [
            "crossplane_managed_resource_exists{gvk=\"iam.dummy.m.crossplane.io/v1alpha1, Kind=Robot\"} 3",
            "crossplane_managed_resource_first_time_to_reconcile_seconds_count{gvk=",
            "crossplane_managed_resource_first_time_to_readiness_seconds_bucket{le=\"5.0\",gvk=",
            "crossplane_managed_resource_first_time_to_reconcile_seconds_bucket{le=\"1e-8\",gvk=",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }

    #[test]
    fn timings_are_keyed_by_namespace_and_name() {
        let m = MrMetrics::default();
        let gvk = "g/v, Kind=K";
        let created = Some(Timestamp::now());
        m.first_reconcile(gvk, &key("a", "r"), created);
        m.first_reconcile(gvk, &key("b", "r"), created);
        // Both first seen: both counted when they become ready.
        m.became_ready(gvk, &key("a", "r"), created);
        m.became_ready(gvk, &key("b", "r"), created);
        m.became_ready(gvk, &key("b", "r"), created);
        let text = encode(&m);
        assert!(
            text.contains(
                "crossplane_managed_resource_first_time_to_readiness_seconds_count{gvk=\"g/v, Kind=K\"} 2"
            ),
            "{text}"
        );
        // Drift is measured from the last in-sync observation, once.
        m.drifted(gvk, &key("a", "r"));
        m.in_sync(gvk, &key("a", "r"));
        m.drifted(gvk, &key("a", "r"));
        m.drifted(gvk, &key("a", "r"));
        assert!(
            encode(&m)
                .contains("crossplane_managed_resource_drift_seconds_count{gvk=\"g/v, Kind=K\"} 1")
        );
    }
}
