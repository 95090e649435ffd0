//! Snapshots of the plan as `steward plan` prints it (human and JSON).
//!
//! Regenerate with `INSTA_UPDATE=always cargo test -p steward-plan --test snapshots`, then read
//! the `.snap` files: they are the user-facing output.
//!
//! Note: a plan cannot hold both a pruned service and an orphan (prune is per stack: on, the
//! leftover is removed; off, it is held as `Orphaned`), so the mixed plan is snapshotted twice
//! over the same Swarm contents, once with prune on and once with prune off.

mod fixtures;

use fixtures::*;
use steward_plan::{plan, Desired, Observed, Owner, Plan, UpdateState};

/// One Swarm with something of every kind:
/// - `admin`: desired, a same-named service exists that steward does not own (conflict);
/// - `api`: desired with a new image, replicas, env, a secret and update policy (spec change);
/// - `cache`: desired, scaled by hand from 2 to 6 (drift);
/// - `frontend`: desired, not in Swarm (create);
/// - `old-cron`: ours, no longer desired (pruned, or orphan when prune is off);
/// - `queue`: desired, converged, but only 1 of 3 tasks up (wait);
/// - `static`: desired and converged (not shown).
fn mixed(prune: bool) -> (Desired, Observed) {
    let api_before = desired("api")
        .image("registry.example/shop/api:1.4.2")
        .replicas(2)
        .env("LOG_LEVEL", "info")
        .env("FEATURE_X", "off")
        .secret_env("DB_PASSWORD", "correct-horse-battery-staple")
        .port(8080, 8080)
        .build();
    let api_after = desired("api")
        .image("registry.example/shop/api:1.5.0")
        .replicas(4)
        .env("LOG_LEVEL", "debug")
        .env("CACHE_URL", "redis://cache:6379")
        .secret_env("DB_PASSWORD", "tr0ub4dor&3")
        .port(8080, 8080)
        .memory_limit(512 * 1024 * 1024)
        .update_parallelism(2)
        .update_delay_ns(10_000_000_000)
        .update_order("start-first")
        .build();
    let cache = desired("cache").image("redis:7.2").replicas(2).build();
    let frontend = desired("frontend")
        .image("registry.example/shop/web:2.0.1")
        .replicas(3)
        .port(80, 8000)
        .env("API_URL", "http://api:8080")
        .secret_env("SESSION_KEY", "hunter2")
        .build();
    let admin = desired("admin").image("registry.example/shop/admin:0.9").build();
    let queue = desired("queue").image("rabbitmq:3.13").replicas(3).build();
    let static_ = desired("static").image("nginx:1.27").build();

    let observed = known(vec![
        observed_from(&desired("admin").image("adminer:4").build())
            .owner(Owner::Nobody)
            .id("x1y2z3")
            .build(),
        observed_from(&api_before).version(118).build(),
        observed_from(&cache).replicas(6).version(57).build(),
        observed_from(&desired("old-cron").image("registry.example/shop/cron:1.0").build())
            .version(31)
            .build(),
        observed_from(&queue)
            .running(1)
            .update_state(UpdateState::Updating, "update in progress")
            .build(),
        observed_from(&static_).build(),
    ]);
    let d = stack_with(
        STACK,
        prune,
        12,
        vec![admin, api_after, cache, frontend, queue, static_],
    );
    (d, observed)
}

fn assert_errors_last(p: &Plan) {
    let shown = p.display();
    let markers: Vec<char> = shown
        .lines()
        .skip(1)
        .filter_map(|l| l.chars().next())
        .filter(|c| *c != ' ')
        .collect();
    let first_error = markers.iter().position(|c| *c == '!').expect("an error line");
    assert!(
        markers[first_error..].iter().all(|c| *c == '!'),
        "errors are not last:\n{shown}"
    );
    assert!(!shown.contains("correct-horse") && !shown.contains("tr0ub4dor") && !shown.contains("hunter2"));
}

#[test]
fn mixed_plan_with_prune() {
    let (d, o) = mixed(true);
    let p = plan(&d, &o);
    assert_errors_last(&p);
    insta::assert_snapshot!("mixed_plan_prune_on", p.display());
}

#[test]
fn mixed_plan_without_prune() {
    let (d, o) = mixed(false);
    let p = plan(&d, &o);
    assert_errors_last(&p);
    insta::assert_snapshot!("mixed_plan_prune_off", p.display());
}

#[test]
fn in_sync_plan() {
    let d = stack(vec![
        desired("api")
            .image("registry.example/shop/api:1.5.0")
            .replicas(4)
            .build(),
        desired("cache").image("redis:7.2").replicas(2).build(),
    ]);
    let p = plan(&d, &applied(&d));
    insta::assert_snapshot!("in_sync_plan", p.display());
}

#[test]
fn swarm_unreadable_plan() {
    let d = stack(vec![desired("api").build(), desired("cache").build()]);
    let p = plan(
        &d,
        &Observed::Unknown {
            reason: "error during connect: Get \"http://docker/v1.47/services\": context deadline exceeded".into(),
        },
    );
    insta::assert_snapshot!("swarm_unreadable_plan", p.display());
}

#[test]
fn json_plan() {
    let (d, o) = mixed(true);
    let json = serde_json::to_string_pretty(&plan(&d, &o).to_json()).unwrap();
    assert!(!json.contains("correct-horse") && !json.contains("tr0ub4dor") && !json.contains("hunter2"));
    insta::assert_snapshot!("json_plan", json);
}

/// Every task-level field: a service created with all of them, and the same service after each
/// was changed by hand (drift, every field listed under its manifest name).
#[test]
fn every_task_field_created_and_drifted() {
    let with_fields = |name: &str, i: usize| {
        let base = desired(name).image("registry.example/tax/web:2.1.0").build();
        let mut state = base.state.clone();
        state.task = every_field(i);
        steward_plan::DesiredService::new(base.name.clone(), state, Default::default(), false)
    };
    let new = with_fields("web", 1);
    let drifted = with_fields("worker", 2);
    let d = stack_with(STACK, false, 1, vec![new, drifted.clone()]);
    let mut o = observed_from(&drifted).build();
    o.state.task = steward_plan::TaskState::default();
    let p = plan(&d, &known(vec![o]));
    insta::assert_snapshot!("every_task_field", p.display());
}
