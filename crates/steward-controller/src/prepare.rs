//! Gathering the desired state: the only place that reads manifests and secrets before planning.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use steward_manifest::load_paths;
use steward_plan::{Desired, DesiredService};
use steward_spec::{resolve_env, SpecErrors};

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid desired state:\n{0}")]
    Invalid(SpecErrors),
}

/// Loads and validates manifests, resolves `valueFrom`, and builds the planner's input.
/// `generation` is left at 0; the controller assigns it from its store.
pub fn prepare(paths: &[PathBuf]) -> Result<Desired, PrepareError> {
    let state = load_paths(paths).map_err(PrepareError::Invalid)?;
    let mut services = Vec::new();
    let mut errors = Vec::new();
    for entry in &state.services {
        match resolve_env(entry) {
            Ok(env) => services.push(DesiredService::from_entry(entry, env)),
            Err(SpecErrors(e)) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(PrepareError::Invalid(SpecErrors(errors)));
    }
    Ok(Desired {
        stack: state.stack,
        prune: state.prune,
        generation: 0,
        services,
        gates: Default::default(),
        remove: Default::default(),
    })
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
