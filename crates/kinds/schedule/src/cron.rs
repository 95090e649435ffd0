//! Cron expressions evaluated in an IANA time zone. TO BE IMPLEMENTED (helper).

use time::OffsetDateTime;

/// A parsed cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    expr: String,
    time_zone: String,
}

/// Which field a problem is in, for `file:line:col` errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CronError {
    Schedule(String),
    TimeZone(String),
}

impl CronSchedule {
    pub fn parse(expr: &str, time_zone: &str) -> Result<CronSchedule, CronError> {
        Ok(CronSchedule {
            expr: expr.to_string(),
            time_zone: time_zone.to_string(),
        })
    }
    pub fn expr(&self) -> &str {
        &self.expr
    }
    pub fn time_zone(&self) -> &str {
        &self.time_zone
    }
    /// The first instant strictly after `t`.
    pub fn next_after(&self, _t: OffsetDateTime) -> Option<OffsetDateTime> {
        todo!()
    }
}
