//! steward's desired state: the document types, their validation and the JSON Schema.
//!
//! No network, no async: parsing is pure ([`parse_sources`]); [`load_paths`] and
//! [`resolve_env`] only read local files and environment variables.

mod condition;
mod load;
mod types;
mod values;

pub use condition::Condition;
pub use load::*;
pub use types::*;
pub use values::*;

/// Label keys steward writes on what it owns. Users may not set keys under this prefix.
pub const RESERVED_LABEL_PREFIX: &str = "steward.io/";

/// The JSON Schema of a manifest document (`Service` or `Stack`).
pub fn json_schema() -> serde_json::Value {
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code, clippy::large_enum_variant)] // only its schema is used
    #[serde(untagged)]
    enum Document {
        Service(ServiceDocument),
        Stack(StackDocument),
    }
    let mut schema = serde_json::to_value(schemars::schema_for!(Document)).expect("schema serializes");
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), "steward manifest document".into());
    }
    schema
}
