//! The registry of kinds: the only place that names every document kind.
//!
//! A new kind adds: its crate under `crates/kinds/<kind>/` (spec, validation, pure planner), a
//! field in [`Documents`] and [`crate::DesiredState`], an arm in [`parse_document`], its
//! cross-document checks in [`check_across`], and its schema in [`json_schema`].

use steward_database::spec::{DatabaseDocument, DatabaseEntry};
use steward_network::spec::{NetworkDocument, NetworkEntry};
use steward_schedule::spec::{ScheduleDocument, ScheduleEntry};
use steward_spec::*;
use steward_volume::spec::{VolumeDocument, VolumeEntry};

/// For error messages: the kinds a document may be.
pub const EXPECTED: &str = "Service, Stack, Schedule, Network, Volume or Database";

/// Documents of every kind, as parsed (before the checks across documents).
#[derive(Default)]
pub struct Documents {
    pub services: Vec<ServiceEntry>,
    pub stacks: Vec<(StackDocument, Source)>,
    pub schedules: Vec<ScheduleEntry>,
    pub networks: Vec<NetworkEntry>,
    pub volumes: Vec<VolumeEntry>,
    pub databases: Vec<DatabaseEntry>,
}

fn source(ctx: &DocCtx, m: &Metadata) -> Source {
    Source {
        file: ctx.file.to_path_buf(),
        line: m.name.referenced.line() + ctx.line_offset,
        line_offset: ctx.line_offset,
    }
}

/// Parses and validates one document of kind `kind` into `docs`; problems go to `errors`.
pub fn parse_document(
    ctx: &DocCtx,
    text: &str,
    kind: &serde_saphyr::Spanned<String>,
    docs: &mut Documents,
    errors: &mut Vec<SpecError>,
) {
    let result = match kind.value.as_str() {
        "Service" => typed::<ServiceDocument>(ctx, text).map(|d| {
            validate_service(ctx, text, &d, errors);
            docs.services.push(ServiceEntry {
                source: source(ctx, &d.metadata),
                metadata: d.metadata,
                spec: d.spec,
            });
        }),
        "Stack" => typed::<StackDocument>(ctx, text).map(|d| {
            validate_labels(ctx, text, &d.metadata, errors);
            let src = source(ctx, &d.metadata);
            docs.stacks.push((d, src));
        }),
        "Schedule" => typed::<ScheduleDocument>(ctx, text).map(|d| {
            steward_schedule::validate::validate(ctx, text, &d, errors);
            docs.schedules.push(ScheduleEntry {
                source: source(ctx, &d.metadata),
                metadata: d.metadata,
                spec: d.spec,
            });
        }),
        "Network" => typed::<NetworkDocument>(ctx, text).map(|d| {
            steward_network::validate::validate(ctx, text, &d, errors);
            docs.networks.push(NetworkEntry {
                source: source(ctx, &d.metadata),
                metadata: d.metadata,
                spec: d.spec,
            });
        }),
        "Volume" => typed::<VolumeDocument>(ctx, text).map(|d| {
            steward_volume::validate::validate(ctx, text, &d, errors);
            docs.volumes.push(VolumeEntry {
                source: source(ctx, &d.metadata),
                metadata: d.metadata,
                spec: d.spec,
            });
        }),
        "Database" => typed::<DatabaseDocument>(ctx, text).map(|d| {
            steward_database::validate::validate_database(ctx, text, &d, errors);
            docs.databases.push(DatabaseEntry {
                source: source(ctx, &d.metadata),
                metadata: d.metadata,
                spec: d.spec,
            });
        }),
        _ => Err(unknown_kind(ctx, kind, EXPECTED)),
    };
    if let Err(e) = result {
        errors.push(e);
    }
}

/// Checks that span documents: unique names per kind, references between kinds. (A Service's
/// `networks` entry or volume mount that names no Network or Volume document is allowed: an
/// existing network, or Docker's default local volume.)
pub fn check_across(docs: &Documents, errors: &mut Vec<SpecError>) {
    let Documents {
        services,
        schedules,
        networks,
        volumes,
        databases,
        ..
    } = docs;
    steward_network::validate::check_unique(networks, errors);
    steward_database::validate::check_unique(databases, errors);
    steward_database::validate::check_references(services, databases, errors);
    steward_volume::validate::check_unique(volumes, errors);
    let mut seen: std::collections::HashMap<&str, &ScheduleEntry> = Default::default();
    for s in schedules {
        if let Some(first) = seen.insert(s.name(), s) {
            errors.push(SpecError {
                file: s.source.file.clone(),
                line: s.source.line,
                column: s.metadata.name.referenced.column(),
                field: "metadata.name".into(),
                message: format!(
                    "duplicate Schedule name {:?} (first defined at {}:{})",
                    s.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
    let service_names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    steward_schedule::validate::check_references(schedules, &service_names, errors);
}

/// The JSON Schema of a manifest document of any kind.
pub fn json_schema() -> serde_json::Value {
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code, clippy::large_enum_variant)] // only its schema is used
    #[serde(untagged)]
    enum Document {
        Service(ServiceDocument),
        Stack(StackDocument),
        Schedule(ScheduleDocument),
        Network(NetworkDocument),
        Volume(VolumeDocument),
        Database(DatabaseDocument),
    }
    let mut schema = serde_json::to_value(schemars::schema_for!(Document)).expect("schema serializes");
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), "steward manifest document".into());
    }
    schema
}
