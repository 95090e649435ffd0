//! Properties of `plan()` over pseudo-random desired states: idempotence, one drift correction.

use super::*;

// ---------------------------------------------------------------------------------------------
// Properties over pseudo-random desired states
// ---------------------------------------------------------------------------------------------

/// Knuth's MMIX linear congruential generator: deterministic, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_service(rng: &mut Lcg, name: String) -> steward_plan::DesiredService {
    let mut b = desired(&name)
        .image(&format!(
            "{}:{}",
            rng.pick(&["app", "nginx", "registry.example/team/api"]),
            rng.below(50)
        ))
        .replicas(rng.below(21));
    if rng.chance(30) {
        b = b.command(&["/bin/sh", "-c"]);
    }
    if rng.chance(30) {
        b = b.args(&[rng.pick(&["serve", "migrate", "--verbose"])]);
    }
    for i in 0..rng.below(5) {
        b = if rng.chance(30) {
            b.secret_env(&format!("SECRET_{i}"), &format!("hunter{}-secret", rng.below(1000)))
        } else {
            b.env(&format!("VAR_{i}"), &format!("v{}", rng.below(1000)))
        };
    }
    for i in 0..rng.below(3) {
        b = b.label(&format!("example.com/l{i}"), rng.pick(&["a", "b", ""]));
    }
    for i in 0..rng.below(3) {
        b = b.port(8000 + i as u32 * 10 + rng.below(10) as u32, 80 + i as u32);
    }
    if rng.chance(40) {
        b = b.cpu_limit(rng.below(4000) as f64 / 1000.0 + 0.001);
    }
    if rng.chance(40) {
        b = b.memory_limit(rng.below(4096) as i64 * 1024 * 1024 + 1);
    }
    b = b
        .update_parallelism(rng.below(4))
        .update_delay_ns(rng.below(120_000) as i64 * 1_000_000)
        .update_failure_action(rng.pick(&["pause", "continue", "rollback"]))
        .update_order(rng.pick(&["stop-first", "start-first"]));
    let ratio = steward_plan::round_ratio(rng.below(10_001) as f64 / 10_000.0);
    let monitor = rng.below(60) as i64 * 1_000_000_000;
    b = b.with_state(|s| {
        s.update.max_failure_ratio = ratio;
        s.rollback.monitor_ns = monitor;
    });
    if rng.chance(20) {
        b = b.adopt();
    }
    b.build()
}

fn random_desired(rng: &mut Lcg) -> Desired {
    let n = rng.below(13);
    let services = (0..n).map(|i| random_service(rng, format!("svc-{i:02}"))).collect();
    stack_with(STACK, rng.chance(50), rng.below(1000) + 1, services)
}

#[test]
fn planning_against_the_applied_state_is_idempotent_for_random_desired_states() {
    let mut rng = Lcg(0x5_eed0_f57e_3a2d);
    let mut total_services = 0;
    for case in 0..200 {
        let d = random_desired(&mut rng);
        total_services += d.services.len();

        // From nothing: one Create per service.
        let fresh = plan(&d, &known(vec![]));
        assert_eq!(fresh.actions.len(), d.services.len(), "case {case}");
        assert!(
            fresh.actions.iter().all(|a| matches!(a, Action::Create { .. })),
            "case {case}"
        );

        // As if applied: nothing to do, nothing held, every status Ready.
        let observed = applied(&d);
        let p = plan(&d, &observed);
        assert!(p.actions.is_empty(), "case {case}: {:#?}\n{d:#?}", p.actions);
        assert!(p.held.is_empty(), "case {case}: {:#?}", p.held);
        for s in assess(&d, &observed, &p, NOW) {
            assert_eq!(rpd(&s), (T, F, F), "case {case}: {}", s.name);
        }
    }
    assert!(total_services > 800, "generator too sparse: {total_services} services");
}

#[test]
fn a_single_hand_change_yields_one_drift_correction_which_then_converges() {
    let mut rng = Lcg(42);
    let mut checked = 0;
    for case in 0..200 {
        let d = random_desired(&mut rng);
        if d.services.is_empty() {
            continue;
        }
        let victim = rng.below(d.services.len() as u64) as usize;
        let kind = rng.below(4);
        let observed: Vec<_> = d
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let o = observed_from(s);
                if i != victim {
                    return o.build();
                }
                match kind {
                    0 => o.replicas(s.state.replicas + 1),
                    1 => o.image("evil:latest"),
                    2 => o.env("INJECTED", "1"),
                    _ => o.with_state(|st| st.update.parallelism += 1),
                }
                .build()
            })
            .collect();
        let p = plan(&d, &known(observed));
        let (_, _, name, changes, reason) = sole_update(&p);
        assert_eq!(name, d.services[victim].name, "case {case}");
        assert_eq!(reason, UpdateReason::DriftCorrected, "case {case}");
        assert_eq!(changes.len(), 1, "case {case}: {changes:#?}");
        assert!(p.held.is_empty(), "case {case}: {:#?}", p.held);
        let victim_env = &d.services[victim].state.env;
        let secrets: Vec<&str> = victim_env
            .iter()
            .filter(|(k, _)| k.starts_with("SECRET_"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_no_secret(&p, &secrets);

        // Once the executor wrote the desired service, the next pass is quiet.
        assert!(plan(&d, &applied(&d)).actions.is_empty());
        checked += 1;
    }
    assert!(checked > 150);
}
