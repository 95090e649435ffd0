//! Gathering the desired state: the only place that reads manifests and secrets before planning.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use steward_database::DatabaseState;
use steward_manifest::load_paths;
use steward_network::DesiredNetwork;
use steward_plan::{Desired, DesiredService};
use steward_schedule::ScheduleState;
use steward_spec::{resolve_env_vars, resolve_service, SpecErrors};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid desired state:\n{0}")]
    Invalid(SpecErrors),
}

/// The planners' inputs for every kind, gathered in one place.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The Stack and its services.
    pub desired: Desired,
    /// Sorted by name.
    pub schedules: Vec<ScheduleState>,
    /// Sorted by name.
    pub networks: Vec<DesiredNetwork>,
    /// Sorted by name; passwords resolved.
    pub databases: Vec<DatabaseState>,
}

/// Loads and validates manifests, resolves `valueFrom`, and builds the Service planner's input.
/// `generation` is left at 0; the controller assigns it from its store.
pub fn prepare(paths: &[PathBuf]) -> Result<Desired, PrepareError> {
    prepare_all(paths).map(|p| p.desired)
}

/// [`prepare`] for every kind.
pub fn prepare_all(paths: &[PathBuf]) -> Result<Prepared, PrepareError> {
    let state = load_paths(paths).map_err(PrepareError::Invalid)?;
    let mut services = Vec::new();
    let mut schedules = Vec::new();
    let mut errors = Vec::new();
    // Every mount of a volume a Volume document names creates it with that driver, options
    // and labels (Swarm creates a named volume on a node at its first mount).
    let volumes: steward_plan::task::Volumes = state
        .volumes
        .iter()
        .map(|v| {
            (
                v.name().to_string(),
                (
                    steward_plan::task::DriverState {
                        name: v.spec.driver.clone(),
                        options: v.spec.driver_opts.clone(),
                    },
                    v.metadata.labels.clone(),
                ),
            )
        })
        .collect();
    for entry in &state.services {
        match resolve_service(entry) {
            Ok(resolved) => services.push(DesiredService::from_entry(entry, resolved, &volumes)),
            Err(SpecErrors(e)) => errors.extend(e),
        }
    }
    for entry in &state.schedules {
        let field = format!("Schedule/{}: spec.job.env", entry.name());
        match resolve_env_vars(&entry.spec.job.env, &entry.source, &field) {
            Ok(env) => schedules.push(ScheduleState::from_entry(entry, env)),
            Err(SpecErrors(e)) => errors.extend(e),
        }
    }
    let mut databases = Vec::new();
    for entry in &state.databases {
        let password = match &entry.spec.password_from {
            None => None,
            Some(src) => match steward_spec::read_source(src, steward_spec::secrets_dir().as_deref()) {
                Ok(v) => Some(v),
                Err((field, message)) => {
                    errors.push(steward_spec::SpecError {
                        file: entry.source.file.clone(),
                        line: entry.source.line,
                        column: 1,
                        field: format!(
                            "Database/{}: spec.passwordFrom{}",
                            entry.name(),
                            field.trim_start_matches(".valueFrom")
                        ),
                        message,
                    });
                    continue;
                }
            },
        };
        databases.push(DatabaseState::from_entry(entry, password));
    }
    if !errors.is_empty() {
        errors.sort();
        return Err(PrepareError::Invalid(SpecErrors(errors)));
    }
    Ok(Prepared {
        desired: Desired {
            stack: state.stack,
            prune: state.prune,
            generation: 0,
            services,
            gates: Default::default(),
            remove: Default::default(),
            retained_objects: Default::default(),
        },
        schedules,
        networks: state.networks.iter().map(DesiredNetwork::from_entry).collect(),
        databases,
    })
}

/// Content hash of everything desired, every kind: the generation moves exactly when it does.
/// (The Stack's rollouts key on [`desired_hash`], which covers services only: editing a
/// schedule starts no rollout.)
pub fn generation_hash(p: &Prepared) -> String {
    let mut h = Sha256::new();
    h.update(desired_hash(&p.desired).as_bytes());
    for s in &p.schedules {
        h.update(s.name.as_bytes());
        h.update([0]);
        h.update(s.spec_hash.as_bytes());
    }
    for n in &p.networks {
        // Debug output of sorted maps and plain fields: stable for equal values.
        h.update(format!("{n:?}").as_bytes());
        h.update([0]);
    }
    for d in &p.databases {
        // The spec only: the password is redacted in Debug output, and never hashed here.
        h.update(d.name.as_bytes());
        h.update(format!("{:?}", d.spec).as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Content hash of a desired state: changes exactly when what would be written changes.
pub fn desired_hash(d: &Desired) -> String {
    let mut h = Sha256::new();
    h.update(d.stack.as_bytes());
    h.update([u8::from(d.prune)]);
    for s in &d.services {
        h.update(s.name.as_bytes());
        h.update([0]);
        h.update(s.spec_hash.as_bytes());
        h.update([u8::from(s.adopt)]);
    }
    hex::encode(&h.finalize()[..8])
}
