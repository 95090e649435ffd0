//! The `Volume` kind: the driver, options and labels of a named volume.
//!
//! It has no reconciler of its own. Swarm creates a named volume on a node when a task there
//! first mounts it, from the mount's `VolumeOptions` (driver, options, labels), exactly as
//! `docker stack deploy` does; a Volume document supplies those for every Service mount whose
//! `source` names it. A volume that already exists on a node is used as it is: Docker does not
//! change an existing volume's driver or options, so an edited document applies only on nodes
//! where the volume does not exist yet.

pub mod spec;
pub mod validate;

pub use spec::{VolumeDocument, VolumeEntry, VolumeSpec};
