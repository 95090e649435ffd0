//! The planner's body. TO BE IMPLEMENTED (helper).
use crate::plan::{Input, Plan};

pub fn plan(_input: &Input) -> Plan {
    todo!()
}
