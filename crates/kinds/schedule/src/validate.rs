//! Checks of a Schedule document, each naming `file:line:col` and the field. TO BE IMPLEMENTED.

use steward_spec::{DocCtx, SpecError};

use crate::spec::{ScheduleDocument, ScheduleEntry};

pub fn validate(ctx: &DocCtx, text: &str, d: &ScheduleDocument, errors: &mut Vec<SpecError>) {
    steward_spec::validate_labels(ctx, text, &d.metadata, errors);
    steward_spec::validate_env(ctx, &d.spec.job.env, "spec.job.env", errors);
}

/// `job.imageFrom.service` names a Service of this desired state.
pub fn check_references(_schedules: &[ScheduleEntry], _services: &[&str], _errors: &mut Vec<SpecError>) {}
