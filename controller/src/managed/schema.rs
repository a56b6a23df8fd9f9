//! Schema pieces the generated CRDs share.

use schemars::{Schema, SchemaGenerator, json_schema};

/// The schema of a Kubernetes timestamp field.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}
