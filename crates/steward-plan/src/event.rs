//! Events the Service planner and the rollout want recorded, with typed reasons and objects.
//! The controller stores them as text (`NewEvent`) at its edge.

use steward_core::status::{EventType, NewEvent};
use steward_core::{ObjectRef, Reason};

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub reason: Reason,
    pub object: ObjectRef,
    pub message: String,
}

impl Event {
    pub fn new(reason: Reason, object: ObjectRef, message: impl Into<String>) -> Self {
        Self {
            reason,
            object,
            message: message.into(),
        }
    }

    /// Derived from the reason: no call site chooses Normal or Warning by itself.
    pub fn warning(&self) -> bool {
        self.reason.is_warning()
    }

    pub fn event_type(&self) -> EventType {
        self.reason.event_type()
    }

    /// The stored form.
    pub fn to_new_event(&self) -> NewEvent {
        NewEvent {
            type_: self.event_type(),
            reason: self.reason.as_str().to_string(),
            message: self.message.clone(),
            object: self.object.to_string(),
        }
    }
}
