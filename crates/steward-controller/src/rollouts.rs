//! Gathering what the rollout state machine needs (job states, health probes, analysis
//! measurements) and carrying out its job actions. The deciding is in `steward_plan::rollout`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use steward_backends::jobs::{JobSpec, JobState, JOB_LABEL};
use steward_backends::probe::http_probe;
use steward_backends::prometheus::{single_value, Prometheus, QueryResult};
use steward_backends::swarm::{error_chain, Swarm, SwarmError};
use steward_plan::model::labels;
use steward_plan::rollout::{due_analysis, due_probes, JobObs, JobStart, MeasureObs, ProbeObs, Rollout};
use steward_plan::Desired;

/// Bound on one analysis query: a slow Prometheus is an error for that round, not a stall.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Gatherer {
    http: Option<reqwest::Client>,
    prometheus: HashMap<String, Prometheus>,
}

pub struct Gathered {
    pub jobs: BTreeMap<String, JobObs>,
    pub probes: BTreeMap<String, ProbeObs>,
    pub measurements: BTreeMap<String, Vec<(String, MeasureObs)>>,
}

impl Gatherer {
    fn http(&mut self) -> &reqwest::Client {
        self.http.get_or_insert_with(reqwest::Client::new)
    }

    pub async fn gather(&mut self, swarm: &Swarm, r: &Rollout, desired: &Desired, now_ms: i64) -> Gathered {
        let mut jobs = BTreeMap::new();
        // Backups (`backupBefore`) are the controller's own, not Swarm jobs.
        for j in r
            .jobs
            .iter()
            .filter(|j| !j.done && j.started_ms.is_some() && j.backup_of.is_none())
        {
            let obs = match swarm.job_status(&j.swarm_name).await {
                Ok(st) => match st.state {
                    JobState::Running => JobObs::Running,
                    JobState::Missing => JobObs::Missing,
                    JobState::Succeeded => JobObs::Succeeded {
                        logs: st.logs.unwrap_or_default(),
                    },
                    JobState::Failed { reason } => JobObs::Failed {
                        reason,
                        logs: st.logs.unwrap_or_default(),
                    },
                },
                // Unknown is not failed: look again next pass.
                Err(e) => {
                    tracing::warn!(job = %j.swarm_name, error = %error_chain(&e), "cannot read job status");
                    JobObs::Running
                }
            };
            jobs.insert(j.swarm_name.clone(), obs);
        }

        let mut probes = BTreeMap::new();
        for (svc, h) in due_probes(r, desired, now_ms) {
            let p = http_probe(self.http(), &h.url, h.expect_status, h.timeout.get()).await;
            probes.insert(
                svc,
                ProbeObs {
                    ok: p.ok,
                    detail: p.detail,
                },
            );
        }

        let mut measurements = BTreeMap::new();
        for (svc, a) in due_analysis(r, desired, now_ms) {
            let prom = match self.prometheus.get(&a.prometheus) {
                Some(p) => p.clone(),
                None => match Prometheus::new(&a.prometheus, QUERY_TIMEOUT) {
                    Ok(p) => {
                        self.prometheus.insert(a.prometheus.clone(), p.clone());
                        p
                    }
                    Err(e) => {
                        let round = a
                            .metrics
                            .iter()
                            .map(|m| (m.name.clone(), MeasureObs::Error(error_chain(&e))))
                            .collect();
                        measurements.insert(svc, round);
                        continue;
                    }
                },
            };
            let mut round = Vec::new();
            for m in &a.metrics {
                let obs = match prom.query(&m.query).await {
                    Ok(QueryResult::Empty) => MeasureObs::Empty,
                    Ok(res) => match single_value(&res) {
                        Some(v) => MeasureObs::Value(v),
                        None => MeasureObs::Error("query returned several series; expected a single value".into()),
                    },
                    Err(e) => MeasureObs::Error(error_chain(&e)),
                };
                round.push((m.name.clone(), obs));
            }
            measurements.insert(svc, round);
        }
        Gathered {
            jobs,
            probes,
            measurements,
        }
    }
}

/// A pre-deploy job Swarm would not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start pre-deploy job {job} of {service} as {swarm_name}")]
pub struct JobStartError {
    pub service: String,
    pub job: String,
    pub swarm_name: String,
    #[source]
    pub source: SwarmError,
}

/// Starts a pre-deploy job as a Swarm replicated job, labelled as the stack's.
pub async fn start_job(swarm: &Swarm, stack: &str, j: &JobStart) -> Result<(), JobStartError> {
    let spec = JobSpec {
        name: j.swarm_name.clone(),
        image: j.image.clone(),
        command: j.command.clone(),
        args: j.args.clone(),
        env: j.env.clone(),
        labels: BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            ("steward.io/job-stack".to_string(), stack.to_string()),
            ("steward.io/job-of".to_string(), j.service.clone()),
            (JOB_LABEL.to_string(), j.swarm_name.clone()),
        ]),
        mounts: vec![],
        task: j.task.clone(),
        // The new version's secrets and configs: the job mounts them before the service does.
        objects: j.objects.clone(),
        object_labels: BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            (labels::STACK.to_string(), stack.to_string()),
            (labels::SERVICE.to_string(), j.service.clone()),
        ]),
    };
    swarm.start_job(&spec).await.map(drop).map_err(|source| JobStartError {
        service: j.service.clone(),
        job: j.job.clone(),
        swarm_name: j.swarm_name.clone(),
        source,
    })
}
